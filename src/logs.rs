//! Reading a replica's log file for `stackctl logs`: the last lines, and what is appended
//! afterwards. The file is where the batch script sends the job's output
//! ([`crate::render::script::log_paths`]); finding the job is the command's part.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Returns the last `n` lines of `bytes` (a final line without a newline counts).
pub fn last_lines(bytes: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (i, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == n {
                return &bytes[i + 1..];
            }
        }
    }
    bytes
}

/// Reads the last `n` lines of the file at `path` without reading all of a large file;
/// returns them and the file's length (where following starts).
pub fn tail(path: &Path, n: usize) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.by_ref().take(len - start).read_to_end(&mut bytes)?;
        let lines = last_lines(&bytes, n);
        // Enough lines, unless the window may have cut the first of them.
        if start == 0 || lines.len() < bytes.len() {
            return Ok((lines.to_vec(), start + bytes.len() as u64));
        }
        window *= 4;
    }
}

/// Reads what was appended to `path` since `offset`; returns it and the new offset. A file
/// that shrank (truncated, rotated) is read from its start.
pub fn read_from(path: &Path, offset: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let start = if len < offset { 0 } else { offset };
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.by_ref().take(len - start).read_to_end(&mut bytes)?;
    Ok((bytes.clone(), start + bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn last_lines_counts_a_final_line_without_newline() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }

    #[test]
    fn tail_reads_the_end_of_a_file_larger_than_its_window_and_follows_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("job.out");
        let mut file = std::fs::File::create(&path).unwrap();
        for i in 0..20_000 {
            writeln!(file, "line {i}").unwrap();
        }
        let (lines, offset) = tail(&path, 3).unwrap();
        assert_eq!(lines, b"line 19997\nline 19998\nline 19999\n");
        assert_eq!(offset, std::fs::metadata(&path).unwrap().len());
        // More lines than one window holds.
        let (lines, _) = tail(&path, 10_000).unwrap();
        assert!(lines.starts_with(b"line 10000\n"));
        writeln!(file, "appended").unwrap();
        let (new, next) = read_from(&path, offset).unwrap();
        assert_eq!(new, b"appended\n");
        assert_eq!(read_from(&path, next).unwrap().0, b"");
        // Truncated: read from the start again.
        std::fs::write(&path, b"fresh\n").unwrap();
        assert_eq!(read_from(&path, next).unwrap().0, b"fresh\n");
    }
}
