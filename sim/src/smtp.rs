//! SMTP sink: ESMTP (EHLO/HELO, AUTH PLAIN/LOGIN, MAIL, RCPT, DATA, RSET, NOOP, QUIT), no STARTTLS.
//!
//! One "call" is one message at the end of DATA. Recipients whose local part starts with
//! `unknown` (or listed in `perm_addresses`) get `550 5.1.1` at RCPT. Injected faults apply at the
//! end of DATA: status 429 → `421 4.7.0` (connection closed), other statuses → `451 4.3.0`,
//! codes → that reply code. The header block of the last message accepted for each recipient
//! is kept (unfolded, under the `Return-Path` of its envelope sender) for assertions:
//! `SimState::mail_headers`. Bounces of accepted messages: see `crate::bounces`.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

use msghub_providers::smtp::wire::{
    MAX_LINE, angle_addr, read_data, read_line, strip_ci, valid_mailbox,
};

use crate::state::{Channel, Injected, SimState};

const HOST: &str = "msghub-sim";
const MAX_MESSAGE: usize = 50 * 1024 * 1024;
const MAX_RCPT: usize = 1000;

/// Runs the SMTP sink on its own thread (current-thread tokio runtime), independent of the
/// caller's runtime. The returned receiver resolves when the thread has finished.
pub(crate) fn spawn(
    listener: std::net::TcpListener,
    state: Arc<SimState>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<oneshot::Receiver<()>> {
    listener.set_nonblocking(true)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("msghub-sim-smtp".into())
        .spawn(move || {
            rt.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => serve(l, state, shutdown).await,
                    Err(e) => tracing::warn!(error = %e, "sim smtp listener setup failed"),
                }
            });
            drop(rt);
            let _ = done_tx.send(());
        })?;
    Ok(done_rx)
}

/// Accepts connections until `shutdown` flips to true.
async fn serve(listener: TcpListener, state: Arc<SimState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let state = state.clone();
                    let rx = shutdown.clone();
                    tokio::spawn(async move {
                        let mut session = Session::new(stream, state);
                        tokio::select! {
                            r = session.run() => {
                                if let Err(e) = r {
                                    tracing::debug!(error = %e, "sim smtp session ended");
                                }
                            }
                            _ = wait_shutdown(rx) => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(error = %e, "sim smtp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
}

async fn wait_shutdown(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

struct Session {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    state: Arc<SimState>,
    greeted: bool,
    authed: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
}

/// What the session loop should do after a command.
enum Next {
    Continue,
    Close,
}

fn enhanced_for(code: u16) -> &'static str {
    match code {
        421 => "4.7.0",
        450 => "4.2.1",
        451 => "4.3.0",
        452 => "4.2.2",
        550 => "5.1.1",
        552 => "5.2.2",
        553 => "5.1.3",
        554 => "5.7.1",
        400..=499 => "4.0.0",
        _ => "5.0.0",
    }
}

impl Session {
    fn new(stream: TcpStream, state: Arc<SimState>) -> Self {
        let (r, w) = stream.into_split();
        let authed = !auth_required(&state);
        Session {
            reader: BufReader::new(r),
            writer: BufWriter::new(w),
            state,
            greeted: false,
            authed,
            mail_from: None,
            rcpts: Vec::new(),
        }
    }

    async fn reply(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(b"\r\n").await?;
        self.writer.flush().await
    }

    async fn read_line(&mut self) -> std::io::Result<Option<String>> {
        read_line(&mut self.reader).await
    }

    async fn run(&mut self) -> std::io::Result<()> {
        self.reply(&format!("220 {HOST} ESMTP ready")).await?;
        while let Some(line) = self.read_line().await? {
            if line.len() > MAX_LINE {
                self.reply("500 5.5.2 Line too long").await?;
                continue;
            }
            if let Next::Close = self.command(&line).await? {
                break;
            }
        }
        Ok(())
    }

    fn reset_tx(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    async fn command(&mut self, line: &str) -> std::io::Result<Next> {
        let (verb, arg) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                self.greeted = true;
                self.reset_tx();
                let lines = [
                    HOST.to_string(),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    "SMTPUTF8".into(),
                    format!("SIZE {MAX_MESSAGE}"),
                    "AUTH PLAIN LOGIN".into(),
                    "ENHANCEDSTATUSCODES".into(),
                ];
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                self.reply(&text.join("\r\n")).await?;
            }
            "HELO" => {
                self.greeted = true;
                self.reset_tx();
                self.reply(&format!("250 {HOST}")).await?;
            }
            "AUTH" => self.auth(arg).await?,
            "MAIL" => self.mail(arg).await?,
            "RCPT" => self.rcpt(arg).await?,
            "DATA" => return self.data().await,
            "RSET" => {
                self.reset_tx();
                self.reply("250 2.0.0 OK").await?;
            }
            "NOOP" => self.reply("250 2.0.0 OK").await?,
            "VRFY" => self.reply("252 2.5.2 Cannot VRFY user").await?,
            "QUIT" => {
                self.reply("221 2.0.0 Bye").await?;
                return Ok(Next::Close);
            }
            "STARTTLS" => self.reply("502 5.5.1 STARTTLS not supported").await?,
            _ => self.reply("500 5.5.2 Command not recognized").await?,
        }
        Ok(Next::Continue)
    }

    async fn auth(&mut self, arg: &str) -> std::io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 EHLO first").await;
        }
        if self.authed && auth_required(&self.state) {
            return self.reply("503 5.5.1 Already authenticated").await;
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let creds = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => i,
                    None => {
                        self.reply("334 ").await?;
                        self.read_line().await?.unwrap_or_default()
                    }
                };
                decode(&resp).and_then(|raw| {
                    let mut f = raw.split(|b| *b == 0);
                    let _authzid = f.next()?;
                    let user = String::from_utf8(f.next()?.to_vec()).ok()?;
                    let pass = String::from_utf8(f.next()?.to_vec()).ok()?;
                    Some((user, pass))
                })
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => i,
                    None => {
                        self.reply("334 VXNlcm5hbWU6").await?;
                        self.read_line().await?.unwrap_or_default()
                    }
                };
                self.reply("334 UGFzc3dvcmQ6").await?;
                let pass = self.read_line().await?.unwrap_or_default();
                let user = decode(&user).and_then(|u| String::from_utf8(u).ok());
                let pass = decode(&pass).and_then(|p| String::from_utf8(p).ok());
                user.zip(pass)
            }
            _ => {
                return self
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        let Some((user, pass)) = creds else {
            return self.reply("501 5.5.2 Cannot decode AUTH parameter").await;
        };
        let cfg = self.state.config();
        let ok = match (&cfg.smtp_username, &cfg.smtp_password) {
            (Some(u), Some(p)) => *u == user && *p == pass,
            _ => true,
        };
        if ok {
            self.authed = true;
            self.reply("235 2.7.0 Authentication successful").await
        } else {
            self.reply("535 5.7.8 Authentication credentials invalid")
                .await
        }
    }

    async fn mail(&mut self, arg: &str) -> std::io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 EHLO/HELO first").await;
        }
        if !self.authed {
            return self.reply("530 5.7.0 Authentication required").await;
        }
        if self.mail_from.is_some() {
            return self.reply("503 5.5.1 Nested MAIL command").await;
        }
        let Some(from) = strip_ci(arg, "FROM:").and_then(angle_addr) else {
            return self.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        self.mail_from = Some(from);
        self.reply("250 2.1.0 OK").await
    }

    async fn rcpt(&mut self, arg: &str) -> std::io::Result<()> {
        if self.mail_from.is_none() {
            return self.reply("503 5.5.1 MAIL first").await;
        }
        let Some(to) = strip_ci(arg, "TO:").and_then(angle_addr) else {
            return self.reply("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if !valid_mailbox(&to) {
            return self
                .reply(&format!("553 5.1.3 <{to}>: Bad recipient address syntax"))
                .await;
        }
        let local = to.split('@').next().unwrap_or_default();
        if local.to_ascii_lowercase().starts_with("unknown")
            || self.state.is_perm(Channel::Email, &to)
        {
            return self
                .reply(&format!(
                    "550 5.1.1 <{to}>: Recipient address rejected: User unknown"
                ))
                .await;
        }
        if self.rcpts.len() >= MAX_RCPT {
            return self.reply("452 4.5.3 Too many recipients").await;
        }
        if !self.rcpts.contains(&to) {
            self.rcpts.push(to);
        }
        self.reply("250 2.1.5 OK").await
    }

    /// The message up to the lone ".": its size and its header block (unfolded, capped).
    async fn read_body(&mut self) -> std::io::Result<Option<(usize, String)>> {
        let mut headers = String::new();
        let mut in_headers = true;
        let size = read_data(&mut self.reader, |line| {
            if !in_headers {
                return;
            }
            if line.is_empty() {
                in_headers = false;
            } else if headers.len() < 64 * 1024 {
                // Unfolded: a continuation line joins the line before it.
                if line.starts_with(b" ") || line.starts_with(b"\t") {
                    headers.truncate(headers.trim_end_matches("\r\n").len());
                }
                headers.push_str(&String::from_utf8_lossy(line));
                headers.push_str("\r\n");
            }
        })
        .await?;
        Ok(size.map(|size| (size, headers)))
    }

    async fn data(&mut self) -> std::io::Result<Next> {
        if self.mail_from.is_none() {
            self.reply("503 5.5.1 MAIL first").await?;
            return Ok(Next::Continue);
        }
        if self.rcpts.is_empty() {
            self.reply("554 5.5.1 No valid recipients").await?;
            return Ok(Next::Continue);
        }
        self.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        let Some((size, headers)) = self.read_body().await? else {
            return Ok(Next::Close);
        };
        let c = Channel::Email;
        let state = self.state.clone();
        SimState::delay(state.begin_call(c)).await;
        let rcpts = std::mem::take(&mut self.rcpts);
        let mail_from = self.mail_from.take().unwrap_or_default();
        if size > MAX_MESSAGE {
            state.fail(c);
            self.reply("552 5.3.4 Message size exceeds fixed limit")
                .await?;
            return Ok(Next::Continue);
        }
        match state.take_fault(c) {
            Some(Injected::Status(429)) => {
                state.fail(c);
                self.reply(&format!(
                    "421 4.7.0 {HOST} Too many requests, try again later"
                ))
                .await?;
                return Ok(Next::Close);
            }
            Some(Injected::Status(_)) => {
                state.fail(c);
                self.reply("451 4.3.0 Temporary server error, try again later")
                    .await?;
                return Ok(Next::Continue);
            }
            Some(Injected::Code(code)) => {
                state.fail(c);
                let reply = fault_reply(&code);
                let close = reply.starts_with("421");
                self.reply(&reply).await?;
                return Ok(if close { Next::Close } else { Next::Continue });
            }
            None => {}
        }
        let id = state.next_id();
        // As the final destination, the sink records the return path the way a mailbox
        // does: a `Return-Path` header above the message's own.
        let headers = format!("Return-Path: <{mail_from}>\r\n{headers}");
        {
            let mut mail = state
                .mail_headers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for r in &rcpts {
                mail.insert(r.to_ascii_lowercase(), headers.clone());
            }
        }
        crate::bounces::after_accept(&state, &mail_from, &rcpts, &headers);
        state.record(c, rcpts);
        self.reply(&format!("250 2.0.0 OK queued as SIM{id:012X}"))
            .await?;
        Ok(Next::Continue)
    }
}

/// Reply line for an injected SMTP code: `"550"` → `550 5.1.1 ...`; a full line is used as is.
fn fault_reply(code: &str) -> String {
    let code = code.trim();
    match code.parse::<u16>() {
        Ok(n) if (400..600).contains(&n) => format!("{n} {} Simulated failure", enhanced_for(n)),
        _ if code.len() > 3 && code.as_bytes()[0].is_ascii_digit() => code.to_string(),
        _ => "554 5.7.1 Simulated failure".to_string(),
    }
}

fn auth_required(state: &SimState) -> bool {
    let cfg = state.config();
    cfg.smtp_username.is_some() && cfg.smtp_password.is_some()
}

fn decode(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(fault_reply("550"), "550 5.1.1 Simulated failure");
        assert_eq!(
            fault_reply("552 5.2.2 Mailbox full"),
            "552 5.2.2 Mailbox full"
        );
    }
}
