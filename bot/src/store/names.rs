//! The installation's [`TaskNames`]: made at random by the first bot, read by every bot when
//! it starts.

use kiln_shared::build::BuildId;
use kiln_shared::keys::{Keys, TASK_NAMES_SCRIPT, TaskNames};
use redis::aio::ConnectionManager;
use redis::{ErrorKind, RedisError, RedisResult, Script};

/// The installation's task names, made now if no bot made them before.
pub(super) async fn task_names(conn: &ConnectionManager, keys: &Keys) -> RedisResult<TaskNames> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).map_err(|e| {
        RedisError::from((
            ErrorKind::Client,
            "no randomness for the task names' secret",
            e.to_string(),
        ))
    })?;
    let (secret, from): (String, u64) = Script::new(TASK_NAMES_SCRIPT)
        .key(keys.task_names())
        .key(keys.build_sequence())
        .arg(hex::encode(fresh))
        .invoke_async(&mut conn.clone())
        .await?;
    let secret = hex::decode(secret).map_err(|e| {
        RedisError::from((
            ErrorKind::Parse,
            "the task names' secret is not hex",
            e.to_string(),
        ))
    })?;
    Ok(TaskNames::new(&secret, BuildId(from)))
}
