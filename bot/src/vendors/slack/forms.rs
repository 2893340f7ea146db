//! The forms Slack posts: slash commands ([`SlashCommand`]), and clicks on a message's
//! buttons as a form holding a JSON `payload` ([`BlockActions`]).

use serde::Deserialize;

/// A slash command as Slack posts it (`application/x-www-form-urlencoded`); the fields Kiln
/// uses.
#[derive(Debug, Clone, Deserialize)]
pub struct SlashCommand {
    /// The command typed, e.g. `/kiln`.
    pub command: String,
    /// What followed it, e.g. `cancel 12`.
    #[serde(default)]
    pub text: String,
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    /// The workspace.
    #[serde(default)]
    pub team_id: String,
    /// The channel it was typed in.
    #[serde(default)]
    pub channel_id: String,
    /// Where to post the answer, within 30 minutes, up to five times.
    pub response_url: String,
}

/// A click on a button of a message (`"type": "block_actions"`); the fields Kiln uses.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockActions {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: ActionUser,
    #[serde(default)]
    pub team: Option<Id>,
    #[serde(default)]
    pub channel: Option<Id>,
    /// Where to post the answer, as for a slash command.
    pub response_url: String,
    #[serde(default)]
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ActionUser {
    pub id: String,
    #[serde(default)]
    pub username: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Id {
    pub id: String,
}

/// One button clicked: Kiln's carry the command they give as their value; a link button has
/// none.
#[derive(Debug, Clone, Deserialize)]
pub struct Action {
    pub action_id: String,
    #[serde(default)]
    pub value: Option<String>,
}

/// The form Slack posts a click as: one field, `payload`, holding JSON.
#[derive(Debug, Clone, Deserialize)]
pub struct ActionForm {
    pub payload: String,
}

/// The slash command a form's `body` holds, or why it is not one.
pub fn slash_command(body: &[u8]) -> Result<SlashCommand, String> {
    serde_urlencoded::from_bytes(body).map_err(|e| format!("not a slash command: {e}"))
}

/// The click a form's `body` holds, or why it is not one.
pub fn block_actions(body: &[u8]) -> Result<BlockActions, String> {
    serde_urlencoded::from_bytes::<ActionForm>(body)
        .map_err(|e| e.to_string())
        .and_then(|form| serde_json::from_str(&form.payload).map_err(|e| e.to_string()))
        .map_err(|e| format!("not a block action: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slacks_example_command() {
        let body = include_bytes!("../../../../tests/fixtures/slack-slash-command.txt");
        let command: SlashCommand = serde_urlencoded::from_bytes(body).expect("a command");
        assert_eq!(command.command, "/weather");
        assert_eq!(command.text, "94070");
        assert_eq!(command.user_id, "U2147483697");
        assert_eq!(command.user_name, "Steve");
        assert_eq!(command.channel_id, "C2147483705");
        assert_eq!(
            command.response_url,
            "https://hooks.slack.com/commands/1234/5678"
        );
    }
}
