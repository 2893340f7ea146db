//! `help [command]`.

use kiln_shared::command::{COMMANDS, parse, usage};

use super::reply::Reply;

/// Every command with its summary, or one command's usage.
pub fn help(command: Option<&str>) -> Reply {
    match command {
        None => {
            let mut text = String::from("Kiln's commands:\n");
            for (_, usage, summary) in COMMANDS {
                text.push_str(&format!("`{usage}`: {summary}\n"));
            }
            Reply::done(text.trim_end())
        }
        Some(name) => match usage(name) {
            Some((usage, summary)) => Reply::done(format!("`{usage}`: {summary}")),
            None => match parse(name) {
                // The grammar's own message names the command that was meant.
                Err(error) => Reply::invalid(error.0),
                Ok(_) => Reply::invalid(format!("`{name}` is not a command")),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let all = help(None);
        assert!(
            all.text.starts_with("Kiln's commands:\n`build "),
            "{}",
            all.text
        );
        assert_eq!(all.text.lines().count(), COMMANDS.len() + 1);
        insta::assert_snapshot!(help(Some("cancel")).text, @"`cancel <build>`: stops a build and its tasks");
        insta::assert_snapshot!(help(Some("cancle")).text, @"`cancle` is not a command; did you mean `cancel`? Try `help cancel`");
        insta::assert_snapshot!(help(Some("<script>")).text, @"`<script>` is not a command; try `help` for the list");
    }
}
