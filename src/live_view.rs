//! The live view of the open connections ([`crate::conn::live`]) that the
//! metrics endpoint serves next to `/metrics`: `GET /connections` as JSON,
//! and `GET /` as a small HTML page.
//!
//! Both are written by hand (no template or JSON crate): the page is a
//! table rendered here, with totals and sums (by user on the server, by
//! server on the local), so it works without JavaScript; a `<noscript>`
//! refresh reloads it every 5 s, and a few lines of inline script (no
//! external assets) fetch `/connections` every 2 s and fill the same
//! tables in place. Every peer-controlled string (a target, a user name) is
//! escaped: for HTML by [`Html`], for JSON by [`Json`], and the script only
//! ever sets `textContent`. Nothing secret is known to the registry.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use crate::conn::live::{self, Row};
use crate::metrics::Role;

/// A string written into HTML text or a quoted attribute: `& < > " '` escaped.
pub struct Html<'a>(pub &'a str);

impl fmt::Display for Html<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                c => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// A string written as a JSON string, quotes included: `"` and `\`
/// escaped, controls, `<`, `>`, `&` and the line and paragraph separators
/// as `\uXXXX` (so the text is safe inside HTML too).
pub struct Json<'a>(pub &'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if u32::from(c) < 0x20
                    || matches!(c, '<' | '>' | '&' | '\u{7f}' | '\u{2028}' | '\u{2029}') =>
                {
                    write!(f, "\\u{:04x}", u32::from(c))?
                }
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A JSON string, or `null`.
struct OrNull<'a>(Option<&'a str>);

impl fmt::Display for OrNull<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(s) => Json(s).fmt(f),
            None => f.write_str("null"),
        }
    }
}

/// Connections and bytes, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sum {
    /// Connections.
    pub open: u64,
    /// Bytes from the clients.
    pub up: u64,
    /// Bytes to the clients.
    pub down: u64,
}

impl Sum {
    fn add(&mut self, row: &Row) {
        self.open += 1;
        self.up = self.up.saturating_add(row.up);
        self.down = self.down.saturating_add(row.down);
    }
}

/// What the view shows at one moment: the rows, their total, and their sums
/// by user (server) or by server (local).
pub struct View {
    role: Role,
    rows: Vec<Row>,
    total: Sum,
    /// By user or server name; `None` for connections without one.
    groups: BTreeMap<Option<String>, Sum>,
}

impl View {
    /// The open connections now, as `role` shows them.
    pub fn now(role: Role) -> View {
        View::of(role, live::snapshot())
    }

    /// `rows`, as `role` shows them.
    pub fn of(role: Role, rows: Vec<Row>) -> View {
        let mut total = Sum::default();
        let mut groups: BTreeMap<Option<String>, Sum> = BTreeMap::new();
        for row in &rows {
            total.add(row);
            groups.entry(group(role, row).map(str::to_owned)).or_default().add(row);
        }
        View { role, rows, total, groups }
    }

    /// The name of what connections are summed by.
    fn by(&self) -> &'static str {
        match self.role {
            Role::Server => "user",
            Role::Local => "server",
        }
    }

    /// `GET /connections`.
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(256 + 256 * self.rows.len());
        let Sum { open, up, down } = self.total;
        let _ = write!(
            out,
            "{{\"role\":\"{}\",\"open\":{open},\"up\":{up},\"down\":{down},\"by\":\"{}\",\"sums\":[",
            self.role.label(),
            self.by()
        );
        for (i, (name, sum)) in self.groups.iter().enumerate() {
            let _ = write!(
                out,
                "{}{{\"name\":{},\"open\":{},\"up\":{},\"down\":{}}}",
                if i > 0 { "," } else { "" },
                OrNull(name.as_deref()),
                sum.open,
                sum.up,
                sum.down
            );
        }
        out.push_str("],\"connections\":[");
        for (i, r) in self.rows.iter().enumerate() {
            let a = &r.about;
            let client = a.client.map(|c| c.to_string());
            let _ = write!(
                out,
                "{}{{\"id\":{},\"client\":{},\"target\":{},\"protocol\":{},\"route\":{},\"user\":{},\"server\":{},\"up\":{},\"down\":{},\"age\":{:.3}}}",
                if i > 0 { "," } else { "" },
                r.id,
                OrNull(client.as_deref()),
                OrNull(a.target.as_deref()),
                OrNull(a.protocol),
                OrNull(a.route),
                OrNull(a.user.as_deref()),
                OrNull(a.server.as_deref()),
                r.up,
                r.down,
                r.age.as_secs_f64(),
            );
        }
        out.push_str("]}\n");
        out
    }

    /// `GET /`.
    pub fn html(&self) -> String {
        let mut out = String::with_capacity(4096 + 512 * self.rows.len());
        let program = match self.role {
            Role::Server => "blocking-server",
            Role::Local => "blocking-local",
        };
        let _ = write!(out, "{HEAD_START}<title>{program}: open connections</title>\n{HEAD_END}");
        let _ = writeln!(out, "<h1>{program} <small>open connections</small></h1>");
        let by = self.by();
        let _ = write!(
            out,
            "<h2>By {by}</h2>\n<table id=\"sums\">\n<thead><tr><th>{by}</th><th>open</th><th>up</th><th>down</th></tr></thead>\n<tbody>\n"
        );
        for (name, sum) in &self.groups {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                Html(name.as_deref().unwrap_or("-")),
                sum.open,
                sum.up,
                sum.down
            );
        }
        let Sum { open, up, down } = self.total;
        let _ = write!(
            out,
            "</tbody>\n<tfoot><tr id=\"total\"><th>all</th><td id=\"total-open\">{open}</td><td id=\"total-up\">{up}</td><td id=\"total-down\">{down}</td></tr></tfoot>\n</table>\n"
        );
        out.push_str("<h2>Connections</h2>\n<table id=\"connections\">\n<thead><tr>");
        for col in self.columns() {
            let _ = write!(out, "<th>{col}</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            let a = &r.about;
            let client = a.client.map(|c| c.to_string());
            let _ =
                write!(out, "<tr data-id=\"{}\"><td>{}</td><td>{}</td>", r.id, r.id, text(client.as_deref()));
            if self.role == Role::Server {
                let _ = write!(out, "<td>{}</td>", text(a.user.as_deref()));
            }
            let _ = write!(out, "<td>{}</td><td>{}</td>", text(a.target.as_deref()), text(a.protocol));
            if self.role == Role::Local {
                let _ = write!(out, "<td>{}</td><td>{}</td>", text(a.route), text(a.server.as_deref()));
            }
            let _ =
                writeln!(out, "<td>{}</td><td>{}</td><td>{:.1}</td></tr>", r.up, r.down, r.age.as_secs_f64());
        }
        out.push_str("</tbody>\n</table>\n");
        out.push_str(SCRIPT);
        out.push_str("</body>\n</html>\n");
        out
    }

    /// The connection table's columns, as the script also knows them (its
    /// `cols`, keys of `/connections`).
    fn columns(&self) -> &'static [&'static str] {
        match self.role {
            Role::Server => &["id", "client", "user", "target", "protocol", "up", "down", "age (s)"],
            Role::Local => {
                &["id", "client", "target", "protocol", "route", "server", "up", "down", "age (s)"]
            }
        }
    }
}

/// What a row is summed by.
fn group(role: Role, row: &Row) -> Option<&str> {
    match role {
        Role::Server => row.about.user.as_deref(),
        Role::Local => row.about.server.as_deref(),
    }
}

/// A table cell's text: escaped, or `-`.
fn text(s: Option<&str>) -> Html<'_> {
    Html(s.unwrap_or("-"))
}

/// The page up to its body. Without script, it reloads every 5 s.
const HEAD_START: &str = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width\">\n";

const HEAD_END: &str = "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>\n<style>\n\
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\n\
h1{font-size:1.3em}h1 small{font-weight:normal;color:#666}h2{font-size:1.05em;margin-top:1.5em}\n\
table{border-collapse:collapse}th,td{padding:.2em .8em;text-align:left;border-bottom:1px solid #ddd}\n\
td:nth-last-child(-n+3),tfoot td{text-align:right;font-variant-numeric:tabular-nums}\n\
#sums td:nth-child(n+2){text-align:right}thead th{background:#f3f3f3}tfoot{font-weight:bold}\n\
</style>\n</head>\n<body>\n";

/// Fetches `/connections` every 2 s and fills the tables in place, with
/// `textContent` only, counting its refreshes in the body's
/// `data-refreshed`. The columns follow the table's head.
const SCRIPT: &str = r##"<script>
(function () {
  var keys = {"id":"id","client":"client","user":"user","target":"target","protocol":"protocol",
    "route":"route","server":"server","up":"up","down":"down","age (s)":"age"};
  var cols = Array.prototype.map.call(document.querySelectorAll("#connections thead th"),
    function (th) { return keys[th.textContent]; });
  function row(cells, id) {
    var tr = document.createElement("tr");
    if (id !== undefined) tr.setAttribute("data-id", id);
    cells.forEach(function (v) {
      var td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "-" : String(v);
      tr.appendChild(td);
    });
    return tr;
  }
  function fill(table, rows) {
    var body = document.createElement("tbody");
    rows.forEach(function (tr) { body.appendChild(tr); });
    document.querySelector(table + " tbody").replaceWith(body);
  }
  function tick() {
    fetch("connections", {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (d) {
      fill("#sums", d.sums.map(function (s) { return row([s.name, s.open, s.up, s.down]); }));
      document.getElementById("total-open").textContent = d.open;
      document.getElementById("total-up").textContent = d.up;
      document.getElementById("total-down").textContent = d.down;
      fill("#connections", d.connections.map(function (c) {
        return row(cols.map(function (k) { return k === "age" ? c.age.toFixed(1) : c[k]; }), c.id);
      }));
      var n = Number(document.body.getAttribute("data-refreshed") || 0) + 1;
      document.body.setAttribute("data-refreshed", n);
    }).catch(function () {});
  }
  setInterval(tick, 2000);
})();
</script>
"##;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::live::About;
    use std::time::Duration;

    fn row(id: u64, target: &str, user: Option<&str>, up: u64) -> Row {
        Row {
            id,
            about: About {
                client: Some("127.0.0.1:5000".parse().unwrap()),
                target: Some(target.to_owned()),
                protocol: Some("trojan"),
                user: user.map(str::to_owned),
                ..About::default()
            },
            up,
            down: 2 * up,
            age: Duration::from_millis(1500),
        }
    }

    #[test]
    fn strings_are_escaped_for_html_and_json() {
        let hostile = "<script>alert(\"x\")</script>&'\n\u{2028}\\";
        assert_eq!(
            Html(hostile).to_string(),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;\n\u{2028}\\"
        );
        assert_eq!(
            Json(hostile).to_string(),
            "\"\\u003cscript\\u003ealert(\\\"x\\\")\\u003c/script\\u003e\\u0026'\\n\\u2028\\\\\""
        );
        assert_eq!(Json("\u{1}é").to_string(), "\"\\u0001é\"");
    }

    #[test]
    fn the_json_holds_rows_totals_and_sums_by_user() {
        let view = View::of(
            Role::Server,
            vec![row(1, "a:1", Some("ann"), 10), row(2, "b:2", None, 5), row(3, "c:3", Some("ann"), 1)],
        );
        let json = view.json();
        assert!(json.starts_with("{\"role\":\"server\",\"open\":3,\"up\":16,\"down\":32,\"by\":\"user\",\"sums\":[{\"name\":null,\"open\":1,\"up\":5,\"down\":10},{\"name\":\"ann\",\"open\":2,\"up\":11,\"down\":22}],"), "{json}");
        assert!(json.contains("{\"id\":2,\"client\":\"127.0.0.1:5000\",\"target\":\"b:2\",\"protocol\":\"trojan\",\"route\":null,\"user\":null,\"server\":null,\"up\":5,\"down\":10,\"age\":1.500}"), "{json}");
        let html = view.html();
        assert!(html.contains("<td id=\"total-open\">3</td><td id=\"total-up\">16</td>"), "{html}");
        assert_eq!(html.matches("<tr data-id=").count(), 3);
    }
}
