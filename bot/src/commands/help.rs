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
