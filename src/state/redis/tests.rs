use super::*;

#[test]
fn an_accounts_keys_share_one_hash_tag() {
    let keys = Keys {
        prefix: "relay:".to_owned(),
    };
    let id = AccountId::from("claude-max-1");
    assert_eq!(
        keys.account(&id, "slots"),
        "{relay:acct:claude-max-1}:slots"
    );
    assert_eq!(
        keys.account(&id, "cooldown"),
        "{relay:acct:claude-max-1}:cooldown"
    );
    assert_eq!(keys.channel(&id), "relay:released:claude-max-1");
}

#[test]
fn sticky_keys_keep_group_and_session_apart() {
    let keys = Keys {
        prefix: "p:".to_owned(),
    };
    assert_ne!(keys.sticky("a:b", "c"), keys.sticky("a", "b:c"));
}

#[test]
fn the_channel_pattern_escapes_glob_characters_of_the_prefix() {
    let keys = Keys {
        prefix: "r*[x]:".to_owned(),
    };
    assert_eq!(keys.channel_pattern(), "r\\*\\[x\\]:released:*");
}

#[test]
fn cooldown_reasons_round_trip_through_their_names() {
    for reason in [
        CooldownReason::RateLimited,
        CooldownReason::Overloaded,
        CooldownReason::UsageCap,
        CooldownReason::AuthFailed,
        CooldownReason::CredentialsRejected,
        CooldownReason::Ejected,
        CooldownReason::UpstreamError,
        CooldownReason::Manual,
    ] {
        assert_eq!(reason_from(reason.as_str()), reason);
    }
}

#[test]
fn a_url_that_is_not_redis_is_refused_without_echoing_it() {
    let err = RedisStore::builder("http://user:secret@host/")
        .build()
        .unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}
