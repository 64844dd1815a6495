//! The cost report as one self-contained HTML page for finance readers: the totals, a
//! stacked bar chart of the cost per payer per day (productive vs overhead), drawn as SVG by
//! inline script from the report's data embedded as JSON, and the breakdown table. No
//! external resources. The drawn chart carries `data-rendered="true"` and one `<rect
//! class="seg">` per bar segment; script errors show in the page's `#errors` box.

use std::fmt::Write as _;

use super::{CostReport, GroupBy};

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Dollars with the precision small amounts need.
fn usd(v: f64) -> String {
    let a = v.abs();
    if a >= 1.0 {
        format!("${v:.2}")
    } else if a >= 0.01 {
        format!("${v:.4}")
    } else {
        format!("${v:.6}")
    }
}

const STYLE: &str = r#"
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px 32px; color: #1d2733; background: #fff; }
h1 { font-size: 22px; margin: 0 0 4px; }
.sub { color: #5b6775; margin: 0 0 20px; font-size: 14px; }
.cards { display: flex; gap: 16px; margin-bottom: 24px; flex-wrap: wrap; }
.card { border: 1px solid #d8dee6; border-radius: 6px; padding: 10px 16px; min-width: 150px; }
.card .label { font-size: 12px; color: #5b6775; text-transform: uppercase; letter-spacing: .04em; }
.card .value { font-size: 22px; font-weight: 600; margin-top: 2px; }
h2 { font-size: 16px; margin: 24px 0 8px; }
#chart { border: 1px solid #e3e8ee; border-radius: 6px; background: #fcfdfe; }
.legend { display: flex; gap: 18px; flex-wrap: wrap; font-size: 13px; margin: 8px 0 0; align-items: center; }
.swatch { display: inline-block; width: 14px; height: 14px; vertical-align: -2px; margin-right: 5px; border-radius: 2px; }
table { border-collapse: collapse; font-size: 13px; margin-top: 4px; }
th, td { padding: 5px 10px; border-bottom: 1px solid #e3e8ee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f6f9; font-weight: 600; }
tr.total td { font-weight: 600; border-top: 2px solid #c5ced8; }
.errors { color: #9b1c1c; background: #fdecec; border: 1px solid #f5b5b5; padding: 8px 12px; white-space: pre-wrap; }
.note { color: #5b6775; font-size: 12px; max-width: 900px; margin-top: 20px; line-height: 1.5; }
"#;

const SCRIPT: &str = r#"
window.onerror = function (msg, src, line) {
  var box = document.getElementById('errors');
  box.hidden = false;
  box.textContent += 'Chart error: ' + msg + ' (line ' + line + ')\n';
};
(function () {
  var NS = 'http://www.w3.org/2000/svg';
  var data = JSON.parse(document.getElementById('cost-data').textContent);
  var svg = document.getElementById('chart');
  var palette = ['#1f77b4', '#d9730d', '#2ca02c', '#9467bd', '#c0392b', '#17a2b8', '#8c564b', '#e377c2'];
  function uniq(xs) { return xs.filter(function (x, i) { return xs.indexOf(x) === i; }).sort(); }
  function usd(v) {
    var a = Math.abs(v);
    if (a < 1e-12) { return '$0'; }
    return '$' + (a >= 1 ? v.toFixed(2) : a >= 0.01 ? v.toFixed(4) : v.toFixed(6));
  }
  function el(name, attrs, text) {
    var e = document.createElementNS(NS, name);
    for (var k in attrs) { e.setAttribute(k, attrs[k]); }
    if (text !== undefined) { e.textContent = text; }
    svg.appendChild(e);
    return e;
  }
  var days = uniq(data.map(function (d) { return d.day; }));
  var payers = uniq(data.map(function (d) { return d.payer_id; }));
  var color = {};
  payers.forEach(function (p, i) { color[p] = palette[i % palette.length]; });
  var W = 1000, H = 420, L = 90, R = 20, T = 20, B = 50;
  var pw = W - L - R, ph = H - T - B;
  var max = Math.max.apply(null, data.map(function (d) { return d.total_usd; }).concat([0]));
  if (!(max > 0)) { max = 1; }
  var ticks = 5, step = max / ticks;
  var mag = Math.pow(10, Math.floor(Math.log10(step)));
  step = [1, 2, 2.5, 5, 10].map(function (m) { return m * mag; }).filter(function (s) { return s >= step; })[0];
  var top = step * Math.ceil(max / step);
  // One precision for every axis label, enough to tell the steps apart.
  var digits = Math.min(6, Math.max(2, Math.ceil(-Math.log10(step)) + 1));
  function y(v) { return T + ph - (v / top) * ph; }
  for (var v = 0; v <= top + step / 2; v += step) {
    el('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e8ee' });
    el('text', { x: L - 8, y: y(v) + 4, 'text-anchor': 'end', 'font-size': 12, fill: '#5b6775' },
      v === 0 ? '$0' : '$' + v.toFixed(digits));
  }
  el('line', { x1: L, x2: W - R, y1: y(0), y2: y(0), stroke: '#8795a1' });
  var gw = pw / Math.max(days.length, 1);
  var bw = Math.min(56, (gw * 0.8) / Math.max(payers.length, 1));
  var bars = 0;
  days.forEach(function (day, i) {
    var x0 = L + i * gw + (gw - bw * payers.length) / 2;
    el('text', { x: L + i * gw + gw / 2, y: H - B + 20, 'text-anchor': 'middle', 'font-size': 12, fill: '#1d2733' }, day);
    payers.forEach(function (p, j) {
      var d = data.filter(function (e) { return e.day === day && e.payer_id === p; })[0];
      if (!d) { return; }
      bars += 1;
      var x = x0 + j * bw + 2, w = bw - 4;
      var parts = [['productive', 0, d.productive_usd, 1], ['overhead', d.productive_usd, d.overhead_usd, 0.35]];
      parts.forEach(function (part) {
        var r = el('rect', {
          'class': 'seg', x: x, width: w, y: y(part[1] + part[2]), height: Math.max(y(part[1]) - y(part[1] + part[2]), 0),
          fill: color[p], 'fill-opacity': part[3], stroke: color[p], 'stroke-width': 1,
          'data-day': day, 'data-payer': p, 'data-part': part[0], 'data-usd': part[2]
        });
        var t = document.createElementNS(NS, 'title');
        t.textContent = p + ', ' + day + ': ' + part[0] + ' ' + usd(part[2]);
        r.appendChild(t);
      });
    });
  });
  var legend = document.getElementById('legend');
  payers.forEach(function (p) {
    var s = document.createElement('span');
    s.innerHTML = '<span class="swatch" style="background:' + color[p] + '"></span>';
    s.appendChild(document.createTextNode(p));
    legend.appendChild(s);
  });
  var key = document.createElement('span');
  key.innerHTML = '<span class="swatch" style="background:#555"></span>productive (the job ran) &nbsp; ' +
    '<span class="swatch" style="background:rgba(85,85,85,.35);border:1px solid #555"></span>overhead (boot, shutdown, failed attempts, orphans)';
  legend.appendChild(key);
  svg.setAttribute('data-bars', String(bars));
  svg.setAttribute('data-rendered', 'true');
})();
"#;

fn by_title(by: GroupBy) -> &'static str {
    match by {
        GroupBy::Payer => "Payer",
        GroupBy::Kind => "Job kind",
        GroupBy::Batch => "Payer / batch",
        GroupBy::Job => "Job",
        GroupBy::Day => "Day (UTC)",
    }
}

fn breakdown(r: &CostReport) -> String {
    let mut out = format!(
        "<table id=\"breakdown\"><thead><tr><th>{}</th><th>Jobs</th><th>Attempts</th>\
         <th>Instance-hours</th><th>Compute</th><th>Volume</th><th>Productive</th>\
         <th>Overhead</th><th>Total</th><th>Productive share</th></tr></thead><tbody>",
        by_title(r.by)
    );
    let mut line = |class: &str, key: &str, jobs: String, t: &super::Totals| {
        let _ = write!(
            out,
            "<tr class=\"{class}\"><td>{}</td><td>{jobs}</td><td>{}</td><td>{:.2}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}%</td></tr>",
            escape(key),
            t.attempts,
            t.billed_seconds as f64 / 3600.0,
            usd(t.compute_usd),
            usd(t.volume_usd),
            usd(t.productive_usd),
            usd(t.overhead_usd),
            usd(t.total_usd),
            t.productive_share() * 100.0
        );
    };
    for g in &r.groups {
        line("group", &g.key, g.jobs.to_string(), &g.totals);
    }
    line("total", "Total", String::new(), &r.totals);
    out.push_str("</tbody></table>");
    out
}

pub(super) fn page(r: &CostReport) -> String {
    // `<` escaped so no value can close the data's script element.
    let data = serde_json::to_string(&r.payer_days)
        .expect("payer days serialize to JSON")
        .replace('<', "\\u003c");
    let t = &r.totals;
    let range = match (r.from, r.to) {
        (None, None) => "all launches".to_owned(),
        (from, to) => format!(
            "launches from {} to {}",
            from.map_or_else(
                || "the start".into(),
                |d| d.format("%Y-%m-%d %H:%M UTC").to_string()
            ),
            to.map_or_else(
                || "now".into(),
                |d| d.format("%Y-%m-%d %H:%M UTC").to_string()
            )
        ),
    };
    let payer = r
        .payer
        .as_ref()
        .map(|p| format!(", payer {}", escape(p)))
        .unwrap_or_default();
    let card = |label: &str, value: String| {
        format!("<div class=\"card\"><div class=\"label\">{label}</div><div class=\"value\">{value}</div></div>")
    };
    let cards = [
        card("Total cost", usd(t.total_usd)),
        card(
            "Productive",
            format!(
                "{} ({:.0}%)",
                usd(t.productive_usd),
                t.productive_share() * 100.0
            ),
        ),
        card("Overhead", usd(t.overhead_usd)),
        card(
            "Instance-hours",
            format!("{:.2}", t.billed_seconds as f64 / 3600.0),
        ),
        card("Attempts", t.attempts.to_string()),
    ]
    .concat();
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>mayfly cost report</title><style>{STYLE}</style></head><body>\
         <h1>mayfly cost report</h1>\
         <p class=\"sub\">Generated {generated}; {range}{payer}.</p>\
         <div id=\"errors\" class=\"errors\" hidden></div>\
         <div class=\"cards\">{cards}</div>\
         <h2>Cost per payer per day: productive vs overhead</h2>\
         <svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"1000\" height=\"420\" \
         viewBox=\"0 0 1000 420\" role=\"img\" aria-label=\"Cost per payer per day\"></svg>\
         <div id=\"legend\" class=\"legend\"></div>\
         <h2>Breakdown by {by}</h2>{table}\
         <p class=\"note\">EC2 bills per second with a 60-second minimum per instance; the root \
         volume is gp3. An attempt is billed from its launch to the end of its instance (the job's \
         finished report, or when mayfly terminated it or saw it gone); attempts still running are \
         costed to the time above. Productive: the time the job ran on an attempt that succeeded. \
         Overhead: everything else (boot, shutdown, failed attempts, orphans).</p>\
         <script id=\"cost-data\" type=\"application/json\">{data}</script>\
         <script>{SCRIPT}</script></body></html>\n",
        generated = r.generated_at.format("%Y-%m-%d %H:%M UTC"),
        by = by_title(r.by).to_lowercase(),
        table = breakdown(r),
    )
}
