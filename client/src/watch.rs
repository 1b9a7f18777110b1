//! `watch`: each message printed the moment it is pushed, as `pull` prints it (or as its
//! JSON line), and acknowledged once printed or saved; the delivery receipts of the messages
//! this client sent; until interrupted (or, from the console, until a line is typed).

use std::io::Write;
use std::time::Duration;

use super::error::ClientError;
use super::input::{Lines, Typed};
use super::live::{Event, Subscription};
use super::session::Session;
use messageu_protocol::{Delivery, Receipt};

/// How long one wait for the server lasts before the typed lines are looked at.
pub(crate) const POLL: Duration = Duration::from_millis(100);
/// Handled messages are acknowledged once none more is waiting, or at this many.
const ACKNOWLEDGE_EVERY: usize = 64;

/// Watches until the process is interrupted, or until `stop` has a line or ends.
pub fn watch(
    session: &mut Session,
    json: bool,
    out: &mut dyn Write,
    stop: Option<&Lines>,
) -> Result<(), ClientError> {
    let mut live = Subscription::start(session, "watch")?;
    if stop.is_none() {
        eprintln!("messageu-client: watching for messages (Ctrl-C stops)");
    }
    let mut printed = 0usize;
    loop {
        if let Some(lines) = stop {
            if lines.wait(Duration::ZERO)? != Typed::Nothing {
                live.acknowledge()?;
                return Ok(());
            }
        }
        let wait = if live.has_unacknowledged() {
            Duration::ZERO
        } else {
            POLL
        };
        let event = match live.next(wait)? {
            Some(Event::Message(message)) => {
                let received = session.receive_all(&[message.as_pulled()])?;
                for message in &received {
                    let text = match json {
                        true => format!("{}\n", message.to_json()),
                        false if printed == 0 => format!("{message}\n"),
                        false => format!("\n{message}\n"),
                    };
                    write(out, &text)?;
                    printed += 1;
                }
                live.handled(&message);
                if printed.is_multiple_of(ACKNOWLEDGE_EVERY) {
                    live.acknowledge()?
                } else {
                    None
                }
            }
            Some(Event::Receipt(receipt)) => {
                let to = session
                    .peer_name(receipt.recipient)
                    .unwrap_or_else(|| receipt.recipient.to_string());
                let text = match json {
                    true => receipt_json(&receipt, &to),
                    false => receipt_text(&receipt, &to),
                };
                write(out, &format!("{text}\n"))?;
                None
            }
            Some(other) => Some(other),
            None if live.has_unacknowledged() => live.acknowledge()?,
            None => None,
        };
        if let Some(event) = event {
            report(&event);
        }
    }
}

/// Says on standard error what became of the connection; the output keeps the messages only.
pub(crate) fn report(event: &Event) {
    match event {
        Event::Lost { server, error } => {
            eprintln!("messageu-client: connection lost to {server} ({error}); reconnecting")
        }
        Event::Unreachable { error, retry_in } => eprintln!(
            "messageu-client: cannot subscribe again ({error}); trying again in {:.2} s",
            retry_in.as_secs_f64()
        ),
        Event::Reconnected { server } => {
            eprintln!("messageu-client: reconnected to {server} and subscribed again")
        }
        Event::Message(_) | Event::Receipt(_) => {}
    }
}

fn write(out: &mut dyn Write, text: &str) -> Result<(), ClientError> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(ClientError::Output)
}

fn delivery_name(how: Delivery) -> &'static str {
    match how {
        Delivery::Acknowledged => "acknowledged",
        Delivery::Pulled => "pulled",
    }
}

/// `message 42 to bob: acknowledged at 2025-12-02 09:30:00.123 UTC`
pub fn receipt_text(receipt: &Receipt, to: &str) -> String {
    format!(
        "message {} to {to}: {} at {}",
        receipt.id.0,
        delivery_name(receipt.how),
        utc(receipt.at_ms)
    )
}

/// A receipt's JSON line: `"event": "receipt"` tells it from a message's.
pub fn receipt_json(receipt: &Receipt, to: &str) -> String {
    serde_json::json!({
        "event": "receipt",
        "message_id": receipt.id.0,
        "to": to,
        "to_id": receipt.recipient.to_string(),
        "delivery": delivery_name(receipt.how),
        "at_ms": receipt.at_ms,
    })
    .to_string()
}

/// A time in milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss.mmm UTC`.
fn utc(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    let seconds = ms_of_day / 1000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use messageu_protocol::{ClientId, MessageId};
    use serde_json::Value;

    #[test]
    fn times_are_printed_as_utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14 22:13:20.123 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(utc(4_102_444_799_999), "2099-12-31 23:59:59.999 UTC");
    }

    #[test]
    fn receipts_print_as_a_line_and_as_json() {
        let receipt = Receipt {
            id: MessageId(42),
            recipient: ClientId([0xb0; 16]),
            how: Delivery::Acknowledged,
            at_ms: 1_700_000_000_123,
        };
        assert_eq!(
            receipt_text(&receipt, "bob"),
            "message 42 to bob: acknowledged at 2023-11-14 22:13:20.123 UTC"
        );
        let pulled = Receipt {
            how: Delivery::Pulled,
            ..receipt
        };
        let json: Value = serde_json::from_str(&receipt_json(&pulled, "bob")).expect("JSON");
        assert_eq!(json["event"], "receipt");
        assert_eq!(json["message_id"], 42);
        assert_eq!(json["to"], "bob");
        assert_eq!(json["to_id"], "b0".repeat(16));
        assert_eq!(json["delivery"], "pulled");
        assert_eq!(json["at_ms"], 1_700_000_000_123u64);
    }
}
