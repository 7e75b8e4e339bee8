//! Slurm's hostlist notation (`node[1-3,7],gpu01`): pure parsing.

/// Expands a hostlist such as `node[1-3,07],gpu1` into host names, in order. Zero padding in a
/// range (`gpu[01-03]`) is kept. Returns an empty list for an empty or `(null)` list.
pub fn expand(list: &str) -> Vec<String> {
    let list = list.trim();
    if list.is_empty() || list == "(null)" || list == "None" {
        return Vec::new();
    }
    let mut hosts = Vec::new();
    for item in split_outside(list, '[', ']') {
        expand_item(item, &mut hosts);
    }
    hosts
}

/// Splits Slurm's comma-separated lists on the commas outside `open`…`close` groups
/// (`node[1,3],gpu1`; `gpu:a100:4(S:0,1),gpu:h100:1`), dropping empty items.
pub fn split_outside(list: &str, open: char, close: char) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            c if c == open => depth += 1,
            c if c == close => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Expands one `prefix[ranges]suffix` item (at most one bracket group, as Slurm prints).
fn expand_item(item: &str, hosts: &mut Vec<String>) {
    let (Some(open), Some(close)) = (item.find('['), item.find(']')) else {
        hosts.push(item.to_owned());
        return;
    };
    if close < open {
        hosts.push(item.to_owned());
        return;
    }
    let (prefix, ranges, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    for range in ranges.split(',') {
        let (low, high) = range.split_once('-').unwrap_or((range, range));
        let width = low.len();
        match (low.parse::<u64>(), high.parse::<u64>()) {
            (Ok(low), Ok(high)) if low <= high && high - low < 100_000 => {
                for n in low..=high {
                    hosts.push(format!("{prefix}{n:0width$}{suffix}"));
                }
            }
            _ => hosts.push(format!("{prefix}{range}{suffix}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_ranges_lists_and_padding() {
        assert_eq!(expand("node[1-3,7]"), ["node1", "node2", "node3", "node7"]);
        assert_eq!(expand("a1,gpu[08-10]"), ["a1", "gpu08", "gpu09", "gpu10"]);
        assert_eq!(expand("solo"), ["solo"]);
        assert!(expand("").is_empty() && expand("(null)").is_empty());
    }
}
