//! SigV4 signing of one Bedrock request, with the `aws-sigv4` crate.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use secrecy::{ExposeSecret, SecretString};

use crate::body::BoxError;

/// The SigV4 service name of Bedrock's runtime API.
pub(crate) const SERVICE: &str = "bedrock";

/// What signing needs; borrowed from the account's credentials.
pub(crate) struct AwsKeys<'a> {
    pub(crate) region: &'a str,
    pub(crate) access_key_id: &'a SecretString,
    pub(crate) secret_access_key: &'a SecretString,
    pub(crate) session_token: Option<&'a SecretString>,
}

/// Signs `req` as it stands (method, URI, headers, body) at `time`, adding
/// `x-amz-date`, `authorization` and, with a session token,
/// `x-amz-security-token`. The added values are marked sensitive.
///
/// Errors never carry a credential: `aws-sigv4`'s errors describe the
/// request, not the identity.
pub(crate) fn sign_request(
    req: &mut Request<Bytes>,
    keys: &AwsKeys<'_>,
    time: SystemTime,
) -> Result<(), BoxError> {
    let identity = aws_credential_types::Credentials::new(
        keys.access_key_id.expose_secret(),
        keys.secret_access_key.expose_secret(),
        keys.session_token.map(|t| t.expose_secret().to_owned()),
        None,
        "tower-llm-relay",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(keys.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()?
        .into();
    let uri = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(name, value)| Ok((name.as_str(), value.to_str()?)))
        .collect::<Result<Vec<_>, http::header::ToStrError>>()?;
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(req.body()),
    )?;
    let (instructions, _signature) = sign(signable, &params)?.into_parts();
    let (new_headers, _query) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_bytes(header.name().as_bytes())?;
        let mut value = HeaderValue::from_str(header.value())?;
        // The signature and token must never be indexed by HTTP/2 header
        // compression or shown by `Debug`.
        value.set_sensitive(header.sensitive() || name != "x-amz-date");
        req.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sha2::{Digest, Sha256};

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// HMAC-SHA256 written out, so the check below does not share code with
    /// the signer it checks.
    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
        let inner = Sha256::new()
            .chain_update(pad(0x36))
            .chain_update(data)
            .finalize();
        Sha256::new()
            .chain_update(pad(0x5c))
            .chain_update(inner)
            .finalize()
            .to_vec()
    }

    #[test]
    fn the_signature_matches_one_computed_by_hand() {
        // 2015-08-30T12:36:00Z, the date of AWS's published examples.
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let akid = SecretString::from("AKIDEXAMPLE");
        let secret = SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let keys = AwsKeys {
            region: "us-east-1",
            access_key_id: &akid,
            secret_access_key: &secret,
            session_token: None,
        };
        let body = Bytes::from_static(br#"{"anthropic_version":"bedrock-2023-05-31"}"#);
        let mut req = Request::post(
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-v2%3A1/invoke",
        )
        .header("content-type", "application/json")
        .body(body.clone())
        .unwrap();
        sign_request(&mut req, &keys, time).unwrap();

        assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z");
        assert!(req.headers().get("x-amz-security-token").is_none());
        // Canonical request: the path is percent-encoded again (`%3A` →
        // `%253A`), as AWS expects for every service but S3.
        let canonical = format!(
            "POST\n/model/anthropic.claude-v2%253A1/invoke\n\n\
             content-type:application/json\n\
             host:bedrock-runtime.us-east-1.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\n\
             content-type;host;x-amz-date\n{}",
            hex(&Sha256::digest(&body))
        );
        let scope = "20150830/us-east-1/bedrock/aws4_request";
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n20150830T123600Z\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = ["20150830", "us-east-1", "bedrock", "aws4_request"]
            .iter()
            .fold(
                b"AWS4wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_vec(),
                |key, part| hmac(&key, part.as_bytes()),
            );
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        let expected = format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{scope}, \
             SignedHeaders=content-type;host;x-amz-date, Signature={signature}"
        );
        assert_eq!(req.headers()["authorization"], expected.as_str());
        assert!(req.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let akid = SecretString::from("AKID");
        let secret = SecretString::from("secret");
        let token = SecretString::from("session-token");
        let keys = AwsKeys {
            region: "eu-west-1",
            access_key_id: &akid,
            secret_access_key: &secret,
            session_token: Some(&token),
        };
        let mut req = Request::post("http://127.0.0.1:9/model/m/invoke")
            .body(Bytes::from_static(b"{}"))
            .unwrap();
        sign_request(&mut req, &keys, SystemTime::now()).unwrap();
        assert_eq!(req.headers()["x-amz-security-token"], "session-token");
        assert!(req.headers()["x-amz-security-token"].is_sensitive());
        let auth = req.headers()["authorization"].to_str().unwrap();
        assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }
}
