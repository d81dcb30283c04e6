//! The texts the hash reads, deserialized in place: strings borrow from
//! the body unless they hold escapes, and everything else is skipped
//! without building a tree. On a 20 KB conversation this is several
//! times cheaper than parsing the messages into `serde_json::Value`.
//!
//! Only the common shapes are understood (text as a string or an array of
//! block objects with string fields). Anything else — a number where text
//! was expected, a block that is not an object, a duplicate key — is an
//! error, and the caller falls back to the `Value` reading, which is the
//! reference: this path never decides differently, it only declines.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::needle::{Needle, UNICODE_ESCAPE};

/// A JSON string, borrowed from the body when it has no escapes.
#[derive(Debug)]
pub(super) struct Text<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(v)))
    }
}

/// A content block (`system` entry, message content entry).
#[derive(Debug, Deserialize)]
pub(super) struct Block<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
    #[serde(borrow, default)]
    text: Option<Text<'a>>,
    #[serde(borrow, default)]
    cache_control: Option<CacheControl<'a>>,
}

#[derive(Debug, Deserialize)]
struct CacheControl<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Text<'a>>,
}

impl Block<'_> {
    pub(super) fn is_ephemeral(&self) -> bool {
        let kind = self.cache_control.as_ref().and_then(|c| c.kind.as_ref());
        kind.is_some_and(|k| k.0 == "ephemeral")
    }

    pub(super) fn text(&self) -> Option<&str> {
        self.text.as_ref().map(|t| &*t.0)
    }

    /// Whether the block counts as text: Anthropic `text`, OpenAI `text`
    /// or `input_text`; system blocks may omit the type.
    fn is_text(&self) -> bool {
        self.kind
            .as_ref()
            .is_none_or(|k| k.0 == "text" || k.0 == "input_text")
    }
}

/// `system`, a message's `content` or `instructions`: a string or blocks.
#[derive(Debug)]
pub(super) enum Content<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
}

impl Content<'_> {
    /// The string, or the text blocks' texts in order.
    pub(super) fn texts(&self) -> impl Iterator<Item = &str> {
        let (one, blocks) = match self {
            Content::Text(text) => (Some(&**text), &[][..]),
            Content::Blocks(blocks) => (None, &blocks[..]),
        };
        one.into_iter().chain(
            blocks
                .iter()
                .filter(|b| b.is_text())
                .filter_map(Block::text),
        )
    }

    pub(super) fn blocks(&self) -> &[Block<'_>] {
        match self {
            Content::Text(_) => &[],
            Content::Blocks(blocks) => blocks,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ContentVisitor)
    }
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an array of blocks")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Cow::Owned(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(block) = seq.next_element()? {
            blocks.push(block);
        }
        Ok(Content::Blocks(blocks))
    }
}

/// A message (or Responses input item): only its content matters.
#[derive(Debug, Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
}

/// What the conversation contributes: its first message's content and the
/// content of the first message with a cache-marked block.
#[derive(Debug, Default)]
pub(super) struct Conversation<'a> {
    /// Whether there was a first message (with or without content).
    pub(super) has_first: bool,
    first: Option<Content<'a>>,
    /// The first marked message's content, when it is not the first's.
    later_marked: Option<Content<'a>>,
    first_is_marked: bool,
}

impl Conversation<'_> {
    pub(super) fn first(&self) -> Option<&Content<'_>> {
        self.first.as_ref()
    }

    pub(super) fn first_marked(&self) -> Option<&Content<'_>> {
        if self.first_is_marked {
            self.first.as_ref()
        } else {
            self.later_marked.as_ref()
        }
    }
}

impl<'a> Conversation<'a> {
    /// A conversation whose first message has `content`.
    fn of_first(content: Option<Content<'a>>) -> Self {
        Self {
            has_first: true,
            first_is_marked: content
                .as_ref()
                .is_some_and(|c| c.blocks().iter().any(Block::is_ephemeral)),
            first: content,
            later_marked: None,
        }
    }

    /// Reads `messages` (or `input`) in place. When no key in it can be a
    /// `cache_control` (the name is absent and no `\u` escape could spell
    /// it), only the first message is read, and the rest is not walked.
    pub(super) fn read(raw: Option<&'a str>) -> serde_json::Result<Self> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let text = raw.as_bytes();
        static CACHE_CONTROL: Needle = Needle::new(b"cache_control");
        let marks_possible = CACHE_CONTROL.is_in(text) || UNICODE_ESCAPE.is_in(text);
        if !marks_possible {
            // Only the first message counts, and the request parser
            // already checked the whole array: read that one message and
            // never walk the rest (most of a long conversation).
            if let Some(first) = crate::json::first_array_element(text) {
                let message: Message<'a> = serde_json::from_str(&raw[first])?;
                return Ok(Self::of_first(message.content));
            }
        }
        let mut deserializer = serde_json::Deserializer::from_str(raw);
        let conversation = deserializer.deserialize_any(ConversationVisitor)?;
        deserializer.end()?;
        Ok(conversation)
    }
}

struct ConversationVisitor;

impl<'de> Visitor<'de> for ConversationVisitor {
    type Value = Conversation<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of messages or a string")
    }

    // A Responses `input` may be one plain string: no messages.
    fn visit_borrowed_str<E: de::Error>(self, _: &'de str) -> Result<Self::Value, E> {
        Ok(Conversation::default())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Conversation::default())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut conversation = Conversation::default();
        while let Some(message) = seq.next_element::<Message<'de>>()? {
            let content = message.content;
            if !conversation.has_first {
                conversation = Conversation::of_first(content);
                continue;
            }
            let marked = content
                .as_ref()
                .is_some_and(|c| c.blocks().iter().any(Block::is_ephemeral));
            if marked && conversation.first_marked().is_none() {
                conversation.later_marked = content;
            }
        }
        Ok(conversation)
    }
}

/// Reads one raw part of the body in place, or declines (see the module
/// docs).
pub(super) fn read<'a, T: Deserialize<'a>>(raw: Option<&'a str>) -> serde_json::Result<Option<T>> {
    raw.map(|raw| serde_json::from_str(raw)).transpose()
}
