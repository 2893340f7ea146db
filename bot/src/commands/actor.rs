//! Who gave a command, and through what.

use kiln_shared::ident::ChannelName;

/// Who gave a command, and through what.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Their name, for messages and the audit stream.
    pub name: &'a str,
    /// `api`, `slack`, `discord`, …
    pub via: &'a str,
    /// What permissions know them as: `<front end>:<user id>`.
    pub id: &'a str,
    /// An operator of this Kiln, who may do anything.
    pub operator: bool,
    /// The chat channel the command was given in (`discord:<id>`, `slack:<id>`), where
    /// `subscribe` sends events.
    pub channel: Option<&'a ChannelName>,
    /// The repository the forge says they may push to (a commenter on a pull request):
    /// there they may give any command.
    pub writes: Option<&'a str>,
    /// Their roles, as permissions name them (`discord:<role id>`).
    pub roles: &'a [String],
}

impl Actor<'_> {
    /// How records name them: their name and, unless they are an operator, the id a chat
    /// front end vouches for (names can be changed by their owner; ids cannot).
    pub fn signature(&self) -> String {
        if self.operator {
            self.name.to_owned()
        } else {
            format!("{} ({})", self.name, self.id)
        }
    }
}
