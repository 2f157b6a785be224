//! What the service lets callers use: one typed configuration, and the counters that
//! enforce it.
//!
//! Every limit is a command-line option of `chiron-host` with the default below (README,
//! "Limits"). Past a limit the caller gets a [`Refusal`]: HTTP 429 (or 413 for a body) with
//! the limit's name and value, never a queue that grows without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::{Duration, Instant};

use thiserror::Error;

/// The limits, as `chiron-host` options.
#[derive(Clone, Debug, clap::Args)]
pub struct Limits {
    /// Training enclaves running at once, for all principals together (a job of N workers
    /// holds N + 1: the workers and the parameter server).
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_training_enclaves: u32,
    /// Training enclaves running at once for one principal.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_training_enclaves_per_principal: u32,
    /// Jobs created but not yet started, per principal: each holds its enclaves while it
    /// waits for the owner's sealed request.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_pending_jobs_per_principal: u32,
    /// How long a created job may wait for its start request before it fails ("not started
    /// in time") and its enclaves are stopped.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub job_start_timeout_secs: u64,
    /// Query enclaves running at once, for all models together.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_query_enclaves: u32,
    /// Query enclaves running at once for one principal's models; past it, starting another
    /// stops that principal's least recently used one (if one is not answering).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub max_query_enclaves_per_principal: u32,
    /// A query enclave that answered nothing for this long is stopped; the next evidence
    /// request for its model starts another (the owner's client re-attests).
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub query_idle_timeout_secs: u64,
    /// Dataset uploads open at once, for all principals together (a resumable upload is open
    /// from its creation until its last part or its expiry; a one-request upload while it
    /// runs).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub max_uploads: u32,
    /// Dataset uploads open at once for one principal.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub max_uploads_per_principal: u32,
    /// A resumable upload not completed within this long is deleted when the host starts.
    #[arg(long, default_value_t = 86_400, value_name = "SECONDS")]
    pub upload_expiry_secs: u64,
    /// Largest dataset container, in bytes.
    #[arg(long, default_value_t = 2 << 30, value_name = "BYTES")]
    pub max_dataset_bytes: u64,
    /// Requests per second one principal may make, on average.
    #[arg(long, default_value_t = 100.0, value_name = "N")]
    pub requests_per_second: f64,
    /// Requests one principal may make in a burst above the average rate.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub request_burst: u32,
}

impl Default for Limits {
    /// The defaults the options declare, so that they are written in one place.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            limits: Limits,
        }
        <Defaults as clap::Parser>::parse_from(["chiron-host"]).limits
    }
}

impl Limits {
    /// The start timeout as a duration.
    pub fn job_start_timeout(&self) -> Duration {
        Duration::from_secs(self.job_start_timeout_secs)
    }

    /// The upload expiry as a duration.
    pub fn upload_expiry(&self) -> Duration {
        Duration::from_secs(self.upload_expiry_secs)
    }

    /// The idle timeout as a duration.
    pub fn query_idle_timeout(&self) -> Duration {
        Duration::from_secs(self.query_idle_timeout_secs)
    }
}

/// A request refused at a limit: which limit, and its value.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("{what}: the limit `{option}` is {value}{hint}")]
pub struct Refusal {
    /// What was refused, in words.
    pub what: &'static str,
    /// The `chiron-host` option that sets the limit.
    pub option: &'static str,
    /// Its value.
    pub value: String,
    /// What the caller can do, starting with "; " (or empty).
    pub hint: &'static str,
    /// When the same request will pass, if that is known (the rate limit): sent as
    /// `Retry-After`, which clients wait for and retry.
    pub retry_after: Option<Duration>,
}

/// Counts held against a total and per-principal limit; a [`Held`] gives its share back when
/// dropped.
pub struct Pool {
    what: &'static str,
    /// What frees a place, for the refusal's hint (starting with "; ").
    frees: &'static str,
    total: (u32, &'static str),
    each: (u32, &'static str),
    counts: StdMutex<(u32, HashMap<String, u32>)>,
}

impl Pool {
    /// A pool of `total` for all principals and `each` for one; the names are the options
    /// that set them, and `frees` (starting with "; ") tells a refused caller what frees a
    /// place.
    pub fn new(
        what: &'static str,
        total: (u32, &'static str),
        each: (u32, &'static str),
        frees: &'static str,
    ) -> Arc<Self> {
        Arc::new(Self {
            what,
            frees,
            total,
            each,
            counts: StdMutex::new((0, HashMap::new())),
        })
    }

    /// Takes `n` for `principal`, or says which limit refuses.
    pub fn take(self: &Arc<Self>, principal: &str, n: u32) -> Result<Held, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let (total, by_principal) = &mut *counts;
        let mine = by_principal.get(principal).copied().unwrap_or(0);
        let refuse = |(value, option): (u32, &'static str)| Refusal {
            what: self.what,
            option,
            value: value.to_string(),
            hint: self.frees,
            retry_after: None,
        };
        if mine.saturating_add(n) > self.each.0 {
            return Err(refuse(self.each));
        }
        if total.saturating_add(n) > self.total.0 {
            return Err(Refusal {
                hint: "; the service is busy, retry later",
                ..refuse(self.total)
            });
        }
        *total += n;
        by_principal.insert(principal.to_owned(), mine + n);
        Ok(Held {
            pool: Arc::clone(self),
            principal: principal.to_owned(),
            n,
        })
    }

    /// How many are held, in all and by `principal`.
    #[cfg(test)]
    pub fn held(&self, principal: &str) -> (u32, u32) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.0, counts.1.get(principal).copied().unwrap_or(0))
    }
}

/// A share of a [`Pool`], given back on drop.
pub struct Held {
    pool: Arc<Pool>,
    principal: String,
    n: u32,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self
            .pool
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (total, by_principal) = &mut *counts;
        *total = total.saturating_sub(self.n);
        if let Some(mine) = by_principal.get_mut(&self.principal) {
            *mine = mine.saturating_sub(self.n);
            if *mine == 0 {
                by_principal.remove(&self.principal);
            }
        }
    }
}

/// A token bucket per principal: `rate` requests a second on average, `burst` at once.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: StdMutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// A limiter from the configuration.
    pub fn new(limits: &Limits) -> Self {
        Self {
            rate: limits.requests_per_second.max(0.0),
            burst: f64::from(limits.request_burst.max(1)),
            buckets: StdMutex::new(HashMap::new()),
        }
    }

    /// Spends one request of `principal`'s, or refuses.
    pub fn check(&self, principal: &str) -> Result<(), Refusal> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, at) = buckets
            .entry(principal.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = if self.rate > 0.0 {
                Duration::from_secs_f64(((1.0 - *tokens) / self.rate).min(3600.0))
            } else {
                Duration::from_secs(3600)
            };
            Err(Refusal {
                what: "too many requests",
                option: "requests-per-second",
                value: format!("{} (burst {})", self.rate, self.burst),
                hint: "; slow down and retry",
                retry_after: Some(wait),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_refuses_past_each_limit_and_takes_back_on_drop() {
        let pool = Pool::new(
            "training enclaves",
            (3, "total"),
            (2, "each"),
            "; retry when one of yours has finished",
        );
        let a = pool.take("alice", 2).expect("within both");
        let Err(refused) = pool.take("alice", 1) else {
            panic!("alice is at her limit")
        };
        assert_eq!(refused.option, "each");
        let b = pool.take("bob", 1).expect("bob has room");
        let Err(refused) = pool.take("carol", 1) else {
            panic!("the total is reached")
        };
        assert_eq!(refused.option, "total");
        assert!(refused.to_string().contains("the limit `total` is 3"));
        assert_eq!(pool.held("alice"), (3, 2));
        drop(a);
        assert_eq!(pool.held("alice"), (1, 0));
        let _c = pool.take("carol", 2).expect("room again");
        drop(b);
        assert_eq!(pool.held("bob"), (2, 0));
    }

    #[test]
    fn the_rate_limiter_allows_a_burst_then_refuses_per_principal() {
        let limits = Limits {
            requests_per_second: 0.001,
            request_burst: 3,
            ..Limits::default()
        };
        let limiter = RateLimiter::new(&limits);
        for _ in 0..3 {
            limiter.check("alice").expect("within the burst");
        }
        let refused = limiter.check("alice").expect_err("past the burst");
        assert_eq!(refused.option, "requests-per-second");
        assert!(
            refused
                .retry_after
                .is_some_and(|wait| wait > Duration::from_secs(60))
        );
        limiter.check("bob").expect("bob has his own bucket");
    }
}
