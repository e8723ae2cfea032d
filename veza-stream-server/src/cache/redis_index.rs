//! The transcode cache's index in Redis, shared by every node that shares `AUDIO_CACHE_DIR`.
//!
//! Keys, under a prefix (`REDIS_KEY_PREFIX`, default `veza:`):
//! - `{prefix}cache:lru`, a sorted set of entry names scored by a logical clock (the most
//!   recently used has the highest score);
//! - `{prefix}cache:size`, a hash of entry name to bytes;
//! - `{prefix}cache:used`, the total bytes;
//! - `{prefix}cache:clock`, the logical clock (one tick per access, all nodes together).
//!
//! Every change is one Lua script, so two nodes never see a half-made update, and eviction
//! (oldest first until the total is within the budget) happens in the same step as the insert
//! that needs it. The caller deletes the evicted files.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult, Script};

/// Records an access or an insert of `ARGV[1]` with size `ARGV[2]`, then evicts down to the
/// budget `ARGV[3]`; returns the evicted names.
const RECORD: &str = r"
local lru, sizes, used_key, clock = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local name, size, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if size > budget then return {} end
local old = tonumber(redis.call('HGET', sizes, name) or '0')
redis.call('HSET', sizes, name, size)
redis.call('ZADD', lru, redis.call('INCR', clock), name)
local used = redis.call('INCRBY', used_key, size - old)
local evicted = {}
while used > budget do
  local oldest = redis.call('ZRANGE', lru, 0, 1)
  local victim = oldest[1]
  if victim == name then victim = oldest[2] end
  if not victim then break end
  local vs = tonumber(redis.call('HGET', sizes, victim) or '0')
  redis.call('HDEL', sizes, victim)
  redis.call('ZREM', lru, victim)
  used = redis.call('INCRBY', used_key, -vs)
  table.insert(evicted, victim)
end
return evicted
";

/// Forgets `ARGV[1]`.
const REMOVE: &str = r"
local size = redis.call('HGET', KEYS[2], ARGV[1])
if size then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('INCRBY', KEYS[3], -tonumber(size))
end
return 0
";

/// Makes the index match the directory listing in `ARGV[2..]` (name, size pairs): drops entries
/// whose file is gone, adds files it lacks as least recently used, recounts, and evicts down to
/// the budget `ARGV[1]`. Returns the evicted names.
const RESYNC: &str = r"
local lru, sizes, used_key = KEYS[1], KEYS[2], KEYS[3]
local budget = tonumber(ARGV[1])
local disk = {}
for i = 2, #ARGV, 2 do disk[ARGV[i]] = ARGV[i + 1] end
for _, n in ipairs(redis.call('HKEYS', sizes)) do
  if not disk[n] then
    redis.call('HDEL', sizes, n)
    redis.call('ZREM', lru, n)
  end
end
for n, s in pairs(disk) do
  redis.call('HSET', sizes, n, s)
  redis.call('ZADD', lru, 'NX', 0, n)
end
local used = 0
for _, v in ipairs(redis.call('HVALS', sizes)) do used = used + tonumber(v) end
redis.call('SET', used_key, used)
local evicted = {}
while used > budget do
  local oldest = redis.call('ZRANGE', lru, 0, 0)
  local victim = oldest[1]
  if not victim then break end
  local vs = tonumber(redis.call('HGET', sizes, victim) or '0')
  redis.call('HDEL', sizes, victim)
  redis.call('ZREM', lru, victim)
  used = used - vs
  table.insert(evicted, victim)
end
redis.call('SET', used_key, used)
return evicted
";

/// The Redis index. Cheap to clone (the connection manager is shared).
#[derive(Clone)]
pub struct RedisIndex {
    conn: ConnectionManager,
    keys: [String; 4],
    budget: u64,
    record: Script,
    remove: Script,
    resync: Script,
}

impl std::fmt::Debug for RedisIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisIndex")
            .field("prefix", &self.keys[0])
            .field("budget", &self.budget)
            .finish()
    }
}

impl RedisIndex {
    /// An index at `url` under `prefix` with a budget in bytes. Does not connect: the
    /// connection is made at the first command and remade after failures, so Redis may be down.
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// When the URL cannot be used.
    pub fn new(url: &str, prefix: &str, budget: u64) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        let key = |s: &str| format!("{prefix}cache:{s}");
        Ok(Self {
            conn,
            keys: [key("lru"), key("size"), key("used"), key("clock")],
            budget,
            record: Script::new(RECORD),
            remove: Script::new(REMOVE),
            resync: Script::new(RESYNC),
        })
    }

    /// Is Redis answering?
    ///
    /// # Errors
    /// Redis's.
    pub async fn ping(&self) -> RedisResult<()> {
        let mut c = self.conn.clone();
        redis::cmd("PING").query_async::<()>(&mut c).await
    }

    /// Records an access to (or the insertion of) `name` of `size` bytes as the most recent, and
    /// evicts the least recently used entries past the budget. Returns the evicted names (their
    /// files are to be deleted). An entry larger than the whole budget is not indexed.
    ///
    /// # Errors
    /// Redis's.
    pub async fn record(&self, name: &str, size: u64) -> RedisResult<Vec<String>> {
        let mut c = self.conn.clone();
        let mut inv = self.record.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(name).arg(size).arg(self.budget);
        inv.invoke_async(&mut c).await
    }

    /// Forgets `name` (its file is gone).
    ///
    /// # Errors
    /// Redis's.
    pub async fn remove(&self, name: &str) -> RedisResult<()> {
        let mut c = self.conn.clone();
        let mut inv = self.remove.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(name);
        inv.invoke_async::<i64>(&mut c).await.map(|_| ())
    }

    /// Makes the index match the directory's `files` (name, bytes). Returns the evicted names.
    ///
    /// # Errors
    /// Redis's.
    pub async fn resync(&self, files: &[(String, u64)]) -> RedisResult<Vec<String>> {
        let mut c = self.conn.clone();
        let mut inv = self.resync.prepare_invoke();
        for k in &self.keys {
            inv.key(k);
        }
        inv.arg(self.budget);
        for (name, size) in files {
            inv.arg(name).arg(*size);
        }
        inv.invoke_async(&mut c).await
    }

    /// Bytes held by every node together.
    ///
    /// # Errors
    /// Redis's.
    pub async fn used(&self) -> RedisResult<u64> {
        let mut c = self.conn.clone();
        let v: Option<i64> = c.get(&self.keys[2]).await?;
        Ok(u64::try_from(v.unwrap_or(0)).unwrap_or(0))
    }

    /// The entries, least recently used first.
    ///
    /// # Errors
    /// Redis's.
    pub async fn entries_oldest_first(&self) -> RedisResult<Vec<String>> {
        let mut c = self.conn.clone();
        c.zrange(&self.keys[0], 0, -1).await
    }
}
