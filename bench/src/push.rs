//! The push mix: as many senders as `--clients` send to as many recipients, which log in with
//! their RSA keys, subscribe and acknowledge what is pushed to them (protocol §E3, §E5).
//! Send-pull with as many clients, registered on the same server, runs in the same invocation,
//! round for round, so that both see the same moment of a noisy machine.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::accounts::{self, Account};
use crate::run::{Delivery, LoadOutcome, Plan, RunError};
use crate::session::ServerSession;
use crate::subscribers::{Progress, Subscribers};
use crate::workload::Mix;

/// Everything a push invocation measured.
#[derive(Debug)]
pub struct PushMeasured {
    /// Making the recipients' keys, registering and subscribing them.
    pub login: Duration,
    pub push: Vec<LoadOutcome>,
    pub send_pull: Vec<LoadOutcome>,
    /// Judged on the senders' sends and the recipients' pushes, acknowledgements and drain.
    pub push_delivery: Delivery,
    pub send_pull_delivery: Delivery,
    /// Connections that failed after subscribing, and the first reasons.
    pub recipient_errors: u64,
    pub recipient_error_samples: Vec<String>,
    /// CPU time of the recipients' loops over the whole invocation.
    pub recipient_cpu: Duration,
}

impl PushMeasured {
    /// Every acknowledged send pushed, acknowledged and deleted once; the same for send-pull.
    pub fn is_clean(&self) -> bool {
        self.push_delivery.verdict.is_exactly_once_pushed()
            && self.recipient_errors == 0
            && self.send_pull_delivery.verdict.is_exactly_once()
    }
}

/// Registers senders and recipients, subscribes the recipients, registers the send-pull
/// clients, alternates a push round with a send-pull round, then waits for the last pushes
/// to be acknowledged, drains every queue and judges delivery.
pub fn measure(plan: &Plan) -> Result<PushMeasured, RunError> {
    let mut senders = ServerSession::register(plan)?;
    let started = Instant::now();
    let recipients = recipients(plan, &senders)?;
    let ids: Vec<_> = recipients.iter().map(|account| account.id).collect();
    senders.add_recipients(&ids)?;
    let subscribers = subscribe(plan, recipients, &senders)?;
    let login = started.elapsed();

    let send_pull_plan = Plan {
        mix: Mix::SendPull,
        ..plan.clone()
    };
    let mut send_pull = ServerSession::register(&send_pull_plan)?;
    let mut push_rounds = Vec::new();
    let mut send_pull_rounds = Vec::new();
    for round in 0..plan.rounds {
        let warmup = if round == 0 {
            plan.warmup
        } else {
            Duration::ZERO
        };
        push_rounds.push(senders.load(warmup)?);
        send_pull_rounds.push(send_pull.load(warmup)?);
    }

    let acknowledged = senders.acknowledged();
    // Whatever is not pushed and acknowledged by then is found by the drain, and judged.
    subscribers.wait_until(plan.timeout, |progress| {
        progress.pushes.load(Ordering::Acquire) >= acknowledged
            && progress.unacknowledged.load(Ordering::Acquire) == 0
    });
    let recipients = subscribers.stop().map_err(RunError::Loop)?;
    senders.merge(recipients.ledger);
    Ok(PushMeasured {
        login,
        push: push_rounds,
        send_pull: send_pull_rounds,
        push_delivery: senders.drain()?,
        send_pull_delivery: send_pull.drain()?,
        recipient_errors: recipients.errors,
        recipient_error_samples: recipients.error_samples,
        recipient_cpu: recipients.cpu,
    })
}

/// One account with a fresh key per sender, numbered after the senders.
fn recipients(plan: &Plan, senders: &ServerSession<'_>) -> Result<Vec<Account>, RunError> {
    let keys = accounts::generate_keys(plan.clients as usize, plan.threads)?;
    Ok(accounts::register(
        plan.addr(),
        plan.edition,
        senders.run_tag(),
        plan.clients,
        keys,
        plan.timeout,
    )?)
}

/// A subscribed connection per recipient, once every one has subscribed.
fn subscribe(
    plan: &Plan,
    recipients: Vec<Account>,
    senders: &ServerSession<'_>,
) -> Result<Subscribers, RunError> {
    let connections: Vec<usize> = (0..recipients.len()).collect();
    let subscribers = Subscribers::start(
        plan.addr(),
        Arc::new(recipients),
        &connections,
        Arc::new(senders.directory().clone()),
        plan.threads,
        plan.timeout,
    )
    .map_err(RunError::Setup)?;
    await_subscribed(subscribers, connections.len(), plan.timeout)
}

/// Waits until all `connections` have subscribed; an error naming the first failure if any
/// failed or the timeout passed.
pub fn await_subscribed(
    subscribers: Subscribers,
    connections: usize,
    timeout: Duration,
) -> Result<Subscribers, RunError> {
    let settled = |progress: &Progress| {
        progress.subscribed.load(Ordering::Acquire) + progress.failed.load(Ordering::Acquire)
            >= connections
    };
    subscribers.wait_until(timeout, settled);
    let subscribed = subscribers.progress().subscribed.load(Ordering::Acquire);
    if subscribed == connections {
        return Ok(subscribers);
    }
    let outcome = subscribers.stop().map_err(RunError::Loop)?;
    Err(RunError::Subscribe {
        failed: connections - subscribed,
        connections,
        first: outcome
            .error_samples
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("not subscribed within {timeout:?}")),
    })
}
