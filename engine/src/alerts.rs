//! Budget alerts, delivered once. Shards raise an alert when a settled request takes a budget
//! across one of its thresholds, as that shard sees it; two shards can both see the same
//! crossing (gossip lags by an interval), so alerts go through one thread that keeps what it
//! has delivered — once per budget, entity, period and threshold — logs each, and POSTs it as
//! JSON to the budget's webhook, retrying a few times off the request path.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use policy::Alert;

/// Alerts waiting for the thread, at most (a full queue drops and counts).
const QUEUE: usize = 4096;
/// Delivery attempts per alert, spaced by [`RETRY_AFTER`] doubling.
const ATTEMPTS: u32 = 4;
const RETRY_AFTER: Duration = Duration::from_millis(500);

/// What identifies one alert: budget, entity, period, period start, threshold.
pub type AlertKey = (String, String, String, String, u8);

fn key_of(a: &Alert) -> AlertKey {
    (a.rule.to_string(), a.entity.to_string(), a.period.as_str().to_string(), a.period_start.clone(), a.threshold)
}

/// The JSON a webhook receives.
pub fn payload(a: &Alert, at_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "type": "budget.threshold_crossed",
        "budget": &*a.rule,
        "entity": &*a.entity,
        "period": a.period.as_str(),
        "period_start": a.period_start,
        "threshold_percent": a.threshold,
        "spent_usd": crate::api::governance::format_usd(a.spent_micros),
        "limit_usd": crate::api::governance::format_usd(a.limit_micros),
        "at": policy::clock::format_instant(at_ms),
    })
}

/// The shards' side: hands alerts to the delivery thread without waiting.
#[derive(Debug, Clone)]
pub struct AlertSink {
    tx: Sender<Alert>,
}

impl AlertSink {
    /// Queues an alert; false when the queue is full (the caller counts the loss).
    pub fn raise(&self, alert: Alert) -> bool {
        !matches!(self.tx.try_send(alert), Err(TrySendError::Full(_)))
    }
}

struct Pending {
    alert: Alert,
    body: Vec<u8>,
    attempts: u32,
    next: Instant,
}

/// The delivery thread's end of the queue.
#[derive(Debug)]
pub struct AlertInbox {
    rx: Receiver<Alert>,
}

/// The queue between shards and the delivery thread.
pub fn channel() -> (AlertSink, AlertInbox) {
    let (tx, rx) = bounded(QUEUE);
    (AlertSink { tx }, AlertInbox { rx })
}

/// Starts the delivery thread. `delivered` are alerts sent before (from the store, so a
/// restart does not send them again); each new one is recorded in `store`. It ends when every
/// sink is dropped and nothing is left to retry, or at once when `stop` is set.
pub fn spawn(
    inbox: AlertInbox,
    delivered: Vec<AlertKey>,
    store: Option<std::sync::Arc<crate::store::Store>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || run(&inbox.rx, delivered.into_iter().collect(), store.as_deref(), &stop))
}

fn run(
    rx: &Receiver<Alert>,
    mut delivered: HashSet<AlertKey>,
    store: Option<&crate::store::Store>,
    stop: &std::sync::atomic::AtomicBool,
) {
    // Made on the first delivery: most gateways never send an alert.
    let mut agent: Option<ureq::Agent> = None;
    let mut retries: VecDeque<Pending> = VecDeque::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(alert) => {
                let key = key_of(&alert);
                if !delivered.insert(key.clone()) {
                    continue;
                }
                if let Some(store) = store {
                    store.record_alert(key, crate::api::governance::now_ms());
                }
                let now = crate::api::governance::now_ms();
                let body = payload(&alert, now).to_string().into_bytes();
                tracing::warn!(
                    budget = %alert.rule,
                    entity = %alert.entity,
                    period = alert.period.as_str(),
                    period_start = %alert.period_start,
                    threshold = alert.threshold,
                    spent_usd = alert.spent_micros as f64 / 1e6,
                    limit_usd = alert.limit_micros as f64 / 1e6,
                    webhook = alert.webhook.as_deref().unwrap_or("-"),
                    "budget alert"
                );
                if alert.webhook.is_some() {
                    retries.push_back(Pending { alert, body, attempts: 0, next: Instant::now() });
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if retries.is_empty() => return,
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
        }
        let due = retries.len();
        for _ in 0..due {
            let Some(mut p) = retries.pop_front() else { break };
            if p.next > Instant::now() {
                retries.push_back(p);
                continue;
            }
            let Some(url) = p.alert.webhook.clone() else { continue };
            p.attempts += 1;
            let client = agent.get_or_insert_with(|| {
                ureq::Agent::config_builder()
                    .timeout_global(Some(Duration::from_secs(5)))
                    .http_status_as_error(true)
                    .build()
                    .into()
            });
            let sent = client.post(&*url).header("content-type", "application/json").send(&p.body[..]);
            match sent {
                Ok(_) => {
                    tracing::info!(budget = %p.alert.rule, threshold = p.alert.threshold, %url, "budget alert delivered")
                }
                Err(e) if p.attempts < ATTEMPTS => {
                    p.next = Instant::now() + RETRY_AFTER * 2u32.pow(p.attempts - 1);
                    tracing::warn!(%url, error = %e, attempt = p.attempts, "budget alert webhook failed; will retry");
                    retries.push_back(p);
                }
                Err(e) => tracing::error!(%url, error = %e, "budget alert webhook failed; giving up"),
            }
        }
    }
}
