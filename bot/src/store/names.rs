//! The installation's [`TaskNames`]: made at random by the first bot, read by every bot when
//! it starts.

use kiln_shared::build::BuildId;
use kiln_shared::keys::{Keys, TASK_NAMES_SCRIPT, TaskNames};
use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};

use super::secret;

/// The installation's task names, made now if no bot made them before.
pub async fn task_names(conn: &ConnectionManager, keys: &Keys) -> RedisResult<TaskNames> {
    const WHAT: &str = "the task names' secret";
    let (kept, from): (String, u64) = Script::new(TASK_NAMES_SCRIPT)
        .key(keys.task_names())
        .key(keys.build_sequence())
        .arg(secret::fresh(WHAT)?)
        .invoke_async(&mut conn.clone())
        .await?;
    Ok(TaskNames::new(&secret::decode(&kept, WHAT)?, BuildId(from)))
}
