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
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use msghub_providers::smtp::wire::{
    self, Conn, Handler, Next, angle_addr, read_data, strip_ci, valid_mailbox,
};

use crate::state::{Channel, Injected, SimState};

const HOST: &str = "msghub-sim";
const MAX_MESSAGE: usize = 50 * 1024 * 1024;
const MAX_RCPT: usize = 1000;
/// A client silent this long is disconnected.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

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
                        let mut session = Session::new(state);
                        let mut conn = Conn::new(stream);
                        tokio::select! {
                            r = wire::run(&mut conn, &mut session, IDLE_TIMEOUT) => {
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
    state: Arc<SimState>,
    authed: bool,
    mail_from: Option<String>,
    rcpts: Vec<String>,
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
    fn new(state: Arc<SimState>) -> Self {
        let authed = !auth_required(&state);
        Session {
            state,
            authed,
            mail_from: None,
            rcpts: Vec::new(),
        }
    }

    async fn auth(&mut self, conn: &mut Conn, arg: &str, greeted: bool) -> std::io::Result<()> {
        if !greeted {
            return conn.reply("503 5.5.1 EHLO first").await;
        }
        if self.authed && auth_required(&self.state) {
            return conn.reply("503 5.5.1 Already authenticated").await;
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or_default().to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let creds = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => i,
                    None => {
                        conn.reply("334 ").await?;
                        conn.line().await?.unwrap_or_default()
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
                        conn.reply("334 VXNlcm5hbWU6").await?;
                        conn.line().await?.unwrap_or_default()
                    }
                };
                conn.reply("334 UGFzc3dvcmQ6").await?;
                let pass = conn.line().await?.unwrap_or_default();
                let user = decode(&user).and_then(|u| String::from_utf8(u).ok());
                let pass = decode(&pass).and_then(|p| String::from_utf8(p).ok());
                user.zip(pass)
            }
            _ => {
                return conn
                    .reply("504 5.5.4 Unrecognized authentication type")
                    .await;
            }
        };
        let Some((user, pass)) = creds else {
            return conn.reply("501 5.5.2 Cannot decode AUTH parameter").await;
        };
        let cfg = self.state.config();
        let ok = match (&cfg.smtp_username, &cfg.smtp_password) {
            (Some(u), Some(p)) => *u == user && *p == pass,
            _ => true,
        };
        if ok {
            self.authed = true;
            conn.reply("235 2.7.0 Authentication successful").await
        } else {
            conn.reply("535 5.7.8 Authentication credentials invalid")
                .await
        }
    }

    /// The message up to the lone ".": its size and its header block (unfolded, capped).
    async fn read_body(conn: &mut Conn) -> std::io::Result<Option<(usize, String)>> {
        let mut headers = String::new();
        let mut in_headers = true;
        let size = read_data(&mut conn.reader, |line, _| {
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
}

impl Handler for Session {
    fn host(&self) -> &str {
        HOST
    }

    fn extensions(&self) -> Vec<String> {
        vec![
            "PIPELINING".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            format!("SIZE {MAX_MESSAGE}"),
            "AUTH PLAIN LOGIN".into(),
            "ENHANCEDSTATUSCODES".into(),
        ]
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpts.clear();
    }

    async fn other(
        &mut self,
        conn: &mut Conn,
        verb: &str,
        arg: &str,
        greeted: bool,
    ) -> std::io::Result<Option<Next>> {
        match verb {
            "AUTH" => self.auth(conn, arg, greeted).await?,
            "STARTTLS" => conn.reply("502 5.5.1 STARTTLS not supported").await?,
            _ => return Ok(None),
        }
        Ok(Some(Next::Continue))
    }

    async fn mail(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()> {
        if !self.authed {
            return conn.reply("530 5.7.0 Authentication required").await;
        }
        if self.mail_from.is_some() {
            return conn.reply("503 5.5.1 Nested MAIL command").await;
        }
        let Some(from) = strip_ci(arg, "FROM:").and_then(angle_addr) else {
            return conn.reply("501 5.5.4 Syntax: MAIL FROM:<address>").await;
        };
        self.mail_from = Some(from);
        conn.reply("250 2.1.0 OK").await
    }

    async fn rcpt(&mut self, conn: &mut Conn, arg: &str) -> std::io::Result<()> {
        if self.mail_from.is_none() {
            return conn.reply("503 5.5.1 MAIL first").await;
        }
        let Some(to) = strip_ci(arg, "TO:").and_then(angle_addr) else {
            return conn.reply("501 5.5.4 Syntax: RCPT TO:<address>").await;
        };
        if !valid_mailbox(&to) {
            return conn
                .reply(&format!("553 5.1.3 <{to}>: Bad recipient address syntax"))
                .await;
        }
        let local = to.split('@').next().unwrap_or_default();
        if local.to_ascii_lowercase().starts_with("unknown")
            || self.state.is_perm(Channel::Email, &to)
        {
            return conn
                .reply(&format!(
                    "550 5.1.1 <{to}>: Recipient address rejected: User unknown"
                ))
                .await;
        }
        if self.rcpts.len() >= MAX_RCPT {
            return conn.reply("452 4.5.3 Too many recipients").await;
        }
        if !self.rcpts.contains(&to) {
            self.rcpts.push(to);
        }
        conn.reply("250 2.1.5 OK").await
    }

    async fn data(&mut self, conn: &mut Conn) -> std::io::Result<Next> {
        if self.mail_from.is_none() {
            conn.reply("503 5.5.1 MAIL first").await?;
            return Ok(Next::Continue);
        }
        if self.rcpts.is_empty() {
            conn.reply("554 5.5.1 No valid recipients").await?;
            return Ok(Next::Continue);
        }
        conn.reply("354 End data with <CR><LF>.<CR><LF>").await?;
        let Some((size, headers)) = Self::read_body(conn).await? else {
            return Ok(Next::Close);
        };
        let c = Channel::Email;
        let state = self.state.clone();
        SimState::delay(state.begin_call(c)).await;
        let rcpts = std::mem::take(&mut self.rcpts);
        let mail_from = self.mail_from.take().unwrap_or_default();
        if size > MAX_MESSAGE {
            state.fail(c);
            conn.reply("552 5.3.4 Message size exceeds fixed limit")
                .await?;
            return Ok(Next::Continue);
        }
        match state.take_fault(c) {
            Some(Injected::Status(429)) => {
                state.fail(c);
                conn.reply(&format!(
                    "421 4.7.0 {HOST} Too many requests, try again later"
                ))
                .await?;
                return Ok(Next::Close);
            }
            Some(Injected::Status(_)) => {
                state.fail(c);
                conn.reply("451 4.3.0 Temporary server error, try again later")
                    .await?;
                return Ok(Next::Continue);
            }
            Some(Injected::Code(code)) => {
                state.fail(c);
                let reply = fault_reply(&code);
                let close = reply.starts_with("421");
                conn.reply(&reply).await?;
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
        conn.reply(&format!("250 2.0.0 OK queued as SIM{id:012X}"))
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
