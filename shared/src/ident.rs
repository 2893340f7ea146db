//! Names of things that are all strings and easy to mix up: a repository, a branch, a commit
//! and a chat channel each have a type of their own, so a function that takes a branch cannot
//! be given a commit. Each is the plain string on the wire and in Redis (`serde`
//! transparent), reads as a `&str` where text is wanted, and is made from one with `into()`.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Serialize};

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn new(name: impl Into<String>) -> Self {
                Self(name.into())
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(name: String) -> Self {
                Self(name)
            }
        }

        impl From<&str> for $name {
            fn from(name: &str) -> Self {
                Self(name.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(name: &String) -> Self {
                Self(name.clone())
            }
        }

        impl From<&$name> for $name {
            fn from(name: &$name) -> Self {
                name.clone()
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }
    };
}

identifier! {
    /// A repository as its forge spells it: `owner/name` (GitLab: `group/subgroup/name`).
    RepoName
}

identifier! {
    /// A branch's short name (`main`), never its ref (`refs/heads/main`).
    BranchName
}

identifier! {
    /// A commit's full id, or a prefix of one where a person typed it.
    CommitId
}

identifier! {
    /// A chat channel in Kiln's own form, `<front end>:<id>`: `discord:<channel id>`,
    /// `slack:<channel id>`, `zulip:<stream id>/<topic>`, `github:<owner/name>#<number>`.
    ChannelName
}

impl CommitId {
    /// Its first eight characters, as people read a commit id.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl ChannelName {
    /// The front end that owns the channel: what comes before the first `:`.
    pub fn scheme(&self) -> &str {
        self.0.split_once(':').map_or("", |(scheme, _)| scheme)
    }
}

/// Whether `word` may name a branch, as git allows (`git check-ref-format --branch`, mostly):
/// no control characters, spaces or `~^:?*[\\`, no `..`, not starting with `-` nor ending
/// with `/` or `.lock`.
pub fn is_branch_name(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 255
        && !word.starts_with('-')
        && !word.contains("..")
        && !word.ends_with('/')
        && !word.ends_with(".lock")
        && word
            .chars()
            .all(|c| !c.is_control() && !" ~^:?*[\\".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_plain_strings_on_the_wire() {
        let commit = CommitId::from("0123456789abcdef");
        let json = serde_json::to_string(&commit).expect("serialise");
        assert_eq!(json, "\"0123456789abcdef\"");
        let back: CommitId = serde_json::from_str(&json).expect("deserialise");
        assert_eq!(back, commit);
    }

    #[test]
    fn a_short_commit_is_its_first_eight_characters() {
        assert_eq!(CommitId::from("0123456789abcdef").short(), "01234567");
        assert_eq!(CommitId::from("0123").short(), "0123");
    }

    #[test]
    fn a_channel_names_its_front_end() {
        assert_eq!(ChannelName::from("slack:C123").scheme(), "slack");
        assert_eq!(ChannelName::from("zulip:7/deploys").scheme(), "zulip");
        assert_eq!(ChannelName::from("nothing").scheme(), "");
    }

    #[test]
    fn identifiers_compare_with_text() {
        let branch = BranchName::from("main");
        assert!(branch == "main");
        assert!("main" == branch);
        let text = String::from("main");
        assert!(branch == text);
        assert_eq!(&*branch, "main");
    }
}
