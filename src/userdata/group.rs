//! A launch group's user-data: one script for every instance of one RunInstances. It carries
//! the table of the group's jobs — each entry is that job attempt's own rendered script
//! (its job id, attempt and environment; secrets only by reference, as always) — and each
//! instance runs the entry of its `ami-launch-index`, read from IMDSv2 (EC2's documented way
//! to give several instances of one launch their own part of one user-data). An index with no
//! entry (EC2 launched more than the table holds, which it never should) shuts its instance
//! down at once. Events keep their schema: the entry is the job's own script, and reports its
//! own job, attempt and instance id.
//!
//! EC2 takes at most 16 KB of user-data. The entries differ in a few values only, so gzip
//! (which cloud-init runs as it runs a plain script) shrinks a table of them to little more
//! than one: the script goes plain when it fits, gzip-compressed when that fits, and
//! otherwise [`GroupUserDataError::TooLarge`] tells the caller to split the group.

use std::io::Write as _;

use super::MAX_USER_DATA_BYTES;

/// The IMDS path of an instance's place in its launch.
pub const LAUNCH_INDEX_PATH: &str = "meta-data/ami-launch-index";

/// The line that ends each entry of the table (a quoted here-document delimiter: the
/// entry is copied byte for byte, nothing in it is expanded).
const END_OF_ENTRY: &str = "MAYFLY_GROUP_ENTRY_END";

/// Why a group's user-data cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupUserDataError {
    /// Even gzip-compressed, the table is over EC2's limit: launch the group in parts.
    #[error("the group's user-data is {bytes} bytes compressed, over EC2's {MAX_USER_DATA_BYTES}")]
    TooLarge { bytes: usize },
    /// An entry contains the line that ends entries, so it cannot be carried as it is.
    #[error("entry {index} contains the line `{END_OF_ENTRY}`")]
    Delimiter { index: usize },
}

/// The user-data of launch group `group` whose entry `i` (launch index `i`) is `entries[i]`:
/// plain when it fits EC2's limit, else gzip-compressed when that fits.
pub fn group_user_data(group: &str, entries: &[String]) -> Result<Vec<u8>, GroupUserDataError> {
    let plain = script(group, entries)?;
    if plain.len() <= MAX_USER_DATA_BYTES {
        return Ok(plain.into_bytes());
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let zipped = gz
        .write_all(plain.as_bytes())
        .and_then(|()| gz.finish())
        .unwrap_or_default();
    if zipped.is_empty() || zipped.len() > MAX_USER_DATA_BYTES {
        return Err(GroupUserDataError::TooLarge {
            bytes: zipped.len(),
        });
    }
    Ok(zipped)
}

fn script(group: &str, entries: &[String]) -> Result<String, GroupUserDataError> {
    // The group is a client token (`mayfly-` and hex): safe bare; quoted all the same.
    let quoted = super::shell_quote(group);
    let mut out = format!(
        r#"#!/bin/bash
# mayfly launch group {group}: {n} job(s), one user-data for all of the group's instances.
# Each instance runs the entry of its ami-launch-index (IMDSv2); an index without an entry
# shuts its instance down at once. MAYFLY_IMDS_ENDPOINT lets a local fleet serve IMDS.
set -u
group={quoted}
imds="${{MAYFLY_IMDS_ENDPOINT:-http://169.254.169.254}}"
index=""
for try in 1 2 3 4 5 6 7 8 9 10; do
  token="$(curl -sf --connect-timeout 2 --max-time 5 -X PUT \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token")" &&
    index="$(curl -sf --connect-timeout 2 --max-time 5 -H "X-aws-ec2-metadata-token: $token" \
      "$imds/latest/{LAUNCH_INDEX_PATH}")" && break
  sleep "$try"
done
entry="$(mktemp "${{TMPDIR:-/tmp}}/mayfly-entry.XXXXXX")" || exit 1
case "$index" in
"#,
        n = entries.len()
    );
    for (i, e) in entries.iter().enumerate() {
        if e.lines().any(|l| l == END_OF_ENTRY) {
            return Err(GroupUserDataError::Delimiter { index: i });
        }
        out.push_str(&format!("{i})\ncat >\"$entry\" <<'{END_OF_ENTRY}'\n{e}"));
        if !e.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{END_OF_ENTRY}\n;;\n"));
    }
    out.push_str(
        r#"*)
  echo "mayfly: launch index '$index' has no entry in group $group; shutting down" >&2
  shutdown -h now
  exit 0
  ;;
esac
chmod +x "$entry"
exec "$entry"
"#,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn entry(i: usize) -> String {
        format!(
            "#!/bin/bash\n# a job script\n{}\necho job j{i} attempt 1\n",
            "echo the same long body of every job's script\n".repeat(40)
        )
    }

    #[test]
    fn small_tables_go_plain_with_one_entry_per_index() {
        let ud = group_user_data("mayfly-abc", &[entry(0), entry(1)]).unwrap();
        let text = String::from_utf8(ud).unwrap();
        assert!(text.starts_with("#!/bin/bash\n"));
        assert!(text.contains("0)\ncat >\"$entry\" <<'MAYFLY_GROUP_ENTRY_END'\n#!/bin/bash"));
        assert!(text.contains("echo job j1 attempt 1\nMAYFLY_GROUP_ENTRY_END\n;;\n"));
        assert!(text.contains("meta-data/ami-launch-index"));
        assert!(text.contains("shutdown -h now"));
    }

    #[test]
    fn large_tables_are_gzipped_and_too_large_ones_refused() {
        let entries: Vec<String> = (0..50).map(entry).collect();
        let ud = group_user_data("mayfly-abc", &entries).unwrap();
        assert!(ud.len() <= MAX_USER_DATA_BYTES);
        assert_eq!(&ud[..2], &[0x1f, 0x8b], "gzip magic");
        let mut text = String::new();
        flate2::read::GzDecoder::new(ud.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.contains("49)\n") && text.contains("echo job j49 attempt 1"));
        // Entries that do not compress (random-looking bodies) cannot fit.
        let noise: Vec<String> = (0..40)
            .map(|i| {
                (0..200)
                    .map(|j: u64| {
                        format!(
                            "{:x}",
                            (i as u64 * 7919 + j).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        assert!(matches!(
            group_user_data("g", &noise),
            Err(GroupUserDataError::TooLarge { .. })
        ));
    }

    #[test]
    fn an_entry_holding_the_end_line_is_refused() {
        let bad = format!("#!/bin/bash\n{END_OF_ENTRY}\n");
        assert_eq!(
            group_user_data("g", &[entry(0), bad]),
            Err(GroupUserDataError::Delimiter { index: 1 })
        );
    }
}
