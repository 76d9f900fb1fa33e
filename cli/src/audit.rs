//! `flotilla audit`: the audit trail as a table (or `--json`), every page.

use crate::client::Client;
use crate::commands::{show_list, Output};
use crate::table::cell;
use serde_json::Value;

/// What an entry changed, on one line: `key=value` for each field.
fn changes(entry: &Value) -> String {
    entry["changes"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| match value {
            Value::String(text) => format!("{key}={text}"),
            other => format!("{key}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `audit [--stack S] [--user U] [--action A] [--since ID]`; `query` is
/// the request's query string (empty or starting with `?`).
pub async fn audit(client: &Client, out: Output, query: &str) -> anyhow::Result<()> {
    let list = client.get_all(&format!("/v3/audits{query}")).await?;
    show_list(
        out,
        &list,
        &["TIME", "USER", "CLIENT", "ACTION", "TARGET", "CHANGES"],
        |entry| {
            vec![
                cell(&entry["time"]),
                cell(&entry["username"]),
                cell(&entry["client_id"]),
                cell(&entry["action"]),
                cell(&entry["target"]),
                changes(entry),
            ]
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::changes;
    use serde_json::json;

    #[test]
    fn changes_table() {
        for (entry, want) in [
            (json!({"changes": {}}), ""),
            (json!({}), ""),
            (
                json!({"changes": {"flag": "Web01", "set": ["A", "B"], "unset": []}}),
                "flag=Web01 set=[\"A\",\"B\"] unset=[]",
            ),
            (
                json!({"changes": {"flag": null, "agent_id": "ag-1"}}),
                "agent_id=ag-1",
            ),
        ] {
            assert_eq!(changes(&entry), want, "{entry}");
        }
    }
}
