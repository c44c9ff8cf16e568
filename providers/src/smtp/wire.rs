//! The server side of SMTP's wire format, shared by the hub's bounce listener and the
//! simulator's sink: command lines, addresses in `MAIL FROM`/`RCPT TO`, and the DATA stream.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest command line read whole (RFC 5321 allows 512 octets; extensions add more).
pub const MAX_LINE: usize = 4096;

/// The address of a `MAIL FROM:`/`RCPT TO:` argument (`<a@b> SIZE=10` → `a@b`, `<>` → ``).
pub fn angle_addr(arg: &str) -> Option<String> {
    let arg = arg.trim_start();
    let addr = if let Some(rest) = arg.strip_prefix('<') {
        &rest[..rest.find('>')?]
    } else {
        arg.split_whitespace().next().unwrap_or_default()
    };
    Some(addr.trim().to_string())
}

/// `local@domain`, both non-empty, no white space.
pub fn valid_mailbox(addr: &str) -> bool {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !addr.contains(char::is_whitespace)
        }
        None => false,
    }
}

/// Case-insensitive prefix strip returning the rest.
pub fn strip_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

/// One command line without its CRLF; `None` at the end of the stream. A line longer than
/// 16 × [`MAX_LINE`] is cut there (the caller refuses lines over [`MAX_LINE`]).
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> std::io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(128);
    let n = reader
        .take(MAX_LINE as u64 * 16)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The message of a DATA command, up to the lone `.`: each line, dot-unstuffed and without
/// its line end, goes to `line`; returns the message's size (CRLF line ends counted), or
/// `None` when the stream ended first.
pub async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    mut line: impl FnMut(&[u8]),
) -> std::io::Result<Option<usize>> {
    let mut size = 0usize;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        let content = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content == b"." {
            return Ok(Some(size));
        }
        let unstuffed = content.strip_prefix(b".").unwrap_or(content);
        size = size.saturating_add(unstuffed.len() + 2);
        line(unstuffed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn addresses_and_prefixes() {
        assert_eq!(angle_addr("<a@b.c> SIZE=10").as_deref(), Some("a@b.c"));
        assert_eq!(angle_addr(" <> ").as_deref(), Some(""));
        assert_eq!(angle_addr("<a@b.c").as_deref(), None);
        assert_eq!(strip_ci("from:<x@y>", "FROM:"), Some("<x@y>"));
        assert_eq!(strip_ci("fr", "FROM:"), None);
        assert!(valid_mailbox("a@b"));
        assert!(!valid_mailbox("ab"));
        assert!(!valid_mailbox("a b@c"));
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_ends_at_the_lone_dot() {
        let input = b"Subject: x\r\n\r\n..leading dot\r\nlast\n.\r\nNEXT\r\n".to_vec();
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut lines = Vec::new();
        let size = read_data(&mut reader, |l| lines.push(l.to_vec()))
            .await
            .unwrap();
        assert_eq!(
            lines,
            [
                b"Subject: x".to_vec(),
                b"".to_vec(),
                b".leading dot".to_vec(),
                b"last".to_vec()
            ]
        );
        assert_eq!(size, Some(10 + 2 + 2 + 12 + 2 + 4 + 2));
        // What follows the message is the next command.
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("NEXT")
        );
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        // Cut off before the dot: no message.
        let mut short = tokio::io::BufReader::new(&b"a\r\nb\r\n"[..]);
        assert_eq!(read_data(&mut short, |_| {}).await.unwrap(), None);
    }
}
