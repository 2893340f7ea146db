//! The platforms Kiln runs tasks on, and how each is named.
//!
//! People write `linux/arm64` (Docker's spelling) in `.kiln.yml` and `--platform`; queues and
//! routing keys use the label `linux-arm64`, which has no `/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An operating system and CPU architecture that tasks can be run on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Platform {
    /// What a task runs on when its step names no platform.
    #[default]
    LinuxAmd64,
    LinuxArm64,
    WindowsAmd64,
    MacosArm64,
}

impl Platform {
    /// Every platform, in the order they are listed to people.
    pub const ALL: [Self; 4] = [
        Self::LinuxAmd64,
        Self::LinuxArm64,
        Self::WindowsAmd64,
        Self::MacosArm64,
    ];

    /// `os/arch`, as written in `.kiln.yml` and given to Docker.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LinuxAmd64 => "linux/amd64",
            Self::LinuxArm64 => "linux/arm64",
            Self::WindowsAmd64 => "windows/amd64",
            Self::MacosArm64 => "macos/arm64",
        }
    }

    /// `os-arch`: the job queue's suffix and the routing key of the platform's jobs.
    pub fn label(self) -> &'static str {
        match self {
            Self::LinuxAmd64 => "linux-amd64",
            Self::LinuxArm64 => "linux-arm64",
            Self::WindowsAmd64 => "windows-amd64",
            Self::MacosArm64 => "macos-arm64",
        }
    }

    /// Parses either spelling, `linux/arm64` or `linux-arm64`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s || p.label() == s)
    }

    /// Whether tasks on this platform can run in Docker containers: Kiln's container tasks
    /// are Linux containers.
    pub fn has_containers(self) -> bool {
        matches!(self, Self::LinuxAmd64 | Self::LinuxArm64)
    }

    /// The platform of the machine this code was built for, if Kiln knows it.
    pub fn native() -> Option<Self> {
        match (std::env::consts::OS, std::env::consts::ARCH) {
            ("linux", "x86_64") => Some(Self::LinuxAmd64),
            ("linux", "aarch64") => Some(Self::LinuxArm64),
            ("windows", "x86_64") => Some(Self::WindowsAmd64),
            ("macos", "aarch64") => Some(Self::MacosArm64),
            _ => None,
        }
    }

    /// Every spelling Kiln accepts, for error messages.
    pub fn known() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a platform name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown platform `{0}`; Kiln runs {known}", known = Platform::known())]
pub struct UnknownPlatform(pub String);

impl FromStr for Platform {
    type Err = UnknownPlatform;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| UnknownPlatform(s.to_owned()))
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Platform {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for Platform {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Platform".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = Self::ALL.iter().map(|p| p.as_str()).collect();
        schemars::json_schema!({
            "description": "An operating system and CPU architecture, `os/arch`.",
            "type": "string",
            "enum": names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_name_the_same_platform() {
        for platform in Platform::ALL {
            assert_eq!(Platform::parse(platform.as_str()), Some(platform));
            assert_eq!(Platform::parse(platform.label()), Some(platform));
            assert!(!platform.label().contains('/'));
        }
        let refused = "linux/riscv64".parse::<Platform>().expect_err("unknown");
        assert!(refused.to_string().contains("linux/amd64, linux/arm64"));
        assert!(Platform::LinuxArm64.has_containers());
        assert!(!Platform::WindowsAmd64.has_containers());
    }
}
