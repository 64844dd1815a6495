//! A progress line on stderr for ledger reads that take more than a moment: items and
//! megabytes read so far, from the adapter's [`ReadMeter`], once a second.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use crate::ledger_index::{ReadCount, ReadMeter};

fn line(what: &str, c: ReadCount) -> String {
    format!(
        "{what}: {} items, {:.1} MB read in {} queries",
        c.items,
        c.bytes as f64 / 1e6,
        c.queries
    )
}

/// Runs `read`; from one second on, shows what `meter` counted so far on stderr (rewritten
/// in place on a terminal, a line every ten seconds otherwise), and the total at the end.
/// `notice` (what the read covers) goes to stderr once the ledger has answered a first page,
/// so a read that fails at once (no such table) says only why.
pub async fn with_progress<T>(
    meter: &ReadMeter,
    what: &str,
    notice: Option<&str>,
    read: impl Future<Output = T>,
) -> T {
    let mut notice = notice;
    let mut say_notice = |meter: &ReadMeter| {
        if meter.count().pages > 0 {
            if let Some(n) = notice.take() {
                eprintln!("{n}");
            }
        }
    };
    let tty = std::io::stderr().is_terminal();
    let every = if tty { 1 } else { 10 };
    tokio::pin!(read);
    let mut shown = false;
    let mut ticks = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut read => {
                say_notice(meter);
                if shown {
                    eprintln!("{}{}", if tty { "\r" } else { "" }, line(what, meter.count()));
                }
                return out;
            }
            _ = tick.tick() => {
                say_notice(meter);
                ticks += 1;
                if ticks % every == 0 {
                    let text = line(what, meter.count());
                    let mut err = std::io::stderr().lock();
                    let _ = if tty { write!(err, "\r{text}") } else { writeln!(err, "{text}") };
                    let _ = err.flush();
                    shown = true;
                }
            }
        }
    }
}
