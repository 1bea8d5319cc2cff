//! The page's behaviour in the browser: connecting with backoff, sending,
//! showing answers.

use std::cell::RefCell;
use std::rc::{Rc, Weak};

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CloseEvent, Event, MessageEvent, UrlSearchParams, WebSocket};

use crate::address::bridge_url;
use crate::backoff::Backoff;
use crate::conversation::Conversation;
use crate::page::{Entry, Page, State};

type Shared = Rc<RefCell<App>>;

/// One WebSocket and its event handlers, released together.
struct Connection {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Detached first, so a late event of this socket reaches nobody.
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close();
    }
}

/// A pending reconnection.
struct Retry {
    id: i32,
    _callback: Closure<dyn FnMut()>,
}

struct App {
    page: Page,
    url: Result<String, String>,
    /// Whether the user wants to be connected (the toggle).
    wanted: bool,
    connection: Option<Connection>,
    retry: Option<Retry>,
    backoff: Backoff,
    conversation: Conversation,
    /// Whether the current WebSocket ever opened: one that did not was
    /// refused, and the page asks the bridge why.
    was_open: bool,
}

fn now_ms() -> f64 {
    web_sys::window()
        .and_then(|window| window.performance())
        .map(|performance| performance.now())
        .unwrap_or_default()
}

/// Sets the page up and connects.
#[wasm_bindgen(start)]
pub fn start() -> Result<(), JsValue> {
    let window = web_sys::window().ok_or("sin ventana")?;
    let document = window.document().ok_or("sin documento")?;
    let location = window.location();
    let requested = UrlSearchParams::new_with_str(&location.search()?)?.get("ws");
    let url = bridge_url(
        &location.protocol()?,
        &location.host()?,
        requested.as_deref(),
    );
    let page = Page::find(document)?;

    let shared: Shared = Rc::new(RefCell::new(App {
        page,
        url,
        wanted: true,
        connection: None,
        retry: None,
        backoff: Backoff::default(),
        conversation: Conversation::default(),
        was_open: false,
    }));

    // The page's own handlers live as long as the page.
    let weak = Rc::downgrade(&shared);
    let on_submit = Closure::<dyn FnMut(Event)>::new(move |event: Event| {
        event.prevent_default();
        if let Some(shared) = weak.upgrade() {
            shared.borrow_mut().send();
        }
    });
    let weak = Rc::downgrade(&shared);
    let on_toggle = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
        if let Some(shared) = weak.upgrade() {
            toggle(&shared);
        }
    });
    {
        let app = shared.borrow();
        app.page
            .form
            .add_event_listener_with_callback("submit", on_submit.as_ref().unchecked_ref())?;
        app.page
            .toggle
            .add_event_listener_with_callback("click", on_toggle.as_ref().unchecked_ref())?;
    }
    on_submit.forget();
    on_toggle.forget();

    connect(&shared);
    // The app lives as long as the page: its handlers only hold weak links.
    std::mem::forget(shared);
    Ok(())
}

fn connect(shared: &Shared) {
    let mut app = shared.borrow_mut();
    app.cancel_retry();
    app.connection = None;
    app.was_open = false;
    let url = match &app.url {
        Ok(url) => url.clone(),
        Err(problem) => {
            let problem = problem.clone();
            app.page.set_status(State::Disconnected, &problem);
            return;
        }
    };
    app.page
        .set_status(State::Connecting, &format!("Conectando a {url}…"));
    app.page.offer(false);
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(_) => {
            app.page
                .set_status(State::Disconnected, &format!("No se puede abrir {url}"));
            return;
        }
    };
    ws.set_binary_type(BinaryType::Arraybuffer);

    let weak = Rc::downgrade(shared);
    let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
        with_app(&weak, |app| app.opened());
    });
    let weak = Rc::downgrade(shared);
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
        with_app(&weak, |app| app.received(event));
    });
    let weak = Rc::downgrade(shared);
    let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
        if let Some(shared) = weak.upgrade() {
            closed(&shared, event);
        }
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    app.connection = Some(Connection {
        ws,
        _on_open: on_open,
        _on_message: on_message,
        _on_close: on_close,
    });
}

fn with_app(weak: &Weak<RefCell<App>>, act: impl FnOnce(&mut App)) {
    if let Some(shared) = weak.upgrade() {
        act(&mut shared.borrow_mut());
    }
}

fn closed(shared: &Shared, event: CloseEvent) {
    let mut app = shared.borrow_mut();
    // Released here, inside its own handler: wasm-bindgen frees a closure
    // only once its call has returned.
    app.connection = None;
    let unanswered = app.conversation.connection_lost();
    if unanswered > 0 {
        app.page.log(
            Entry::Notice,
            &format!("{unanswered} mensaje(s) sin respuesta: la conexión se cerró"),
        );
    }
    let reason = event.reason();
    let mut status = format!("Desconectado (código {}", event.code());
    if !reason.is_empty() {
        status.push_str(": ");
        status.push_str(&reason);
    }
    status.push(')');
    if app.wanted && !app.was_open {
        // Browsers hide the handshake's answer (1006): a plain fetch of
        // the same URL gets the refusal's status and sentence.
        if let Ok(url) = app.url.clone() {
            app.page.set_status(
                State::Disconnected,
                &format!("{status} — preguntando al puente por qué…"),
            );
            drop(app);
            ask_why(shared, &url);
            return;
        }
    }
    if app.wanted {
        let delay = app.backoff.closed(now_ms(), js_sys::Math::random());
        let seconds = format!("{:.1}", f64::from(delay) / 1000.0).replace('.', ",");
        status.push_str(&format!(" — nuevo intento en {seconds} s"));
        schedule_retry(&mut app, shared, delay);
    }
    app.page.set_status(State::Disconnected, &status);
}

/// The http(s) form of a ws(s) URL.
fn http_form(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("wss://") {
        format!("https://{rest}")
    } else if let Some(rest) = url.strip_prefix("ws://") {
        format!("http://{rest}")
    } else {
        url.to_owned()
    }
}

/// Fetches the WebSocket's URL as plain HTTP and acts on the answer.
fn ask_why(shared: &Shared, url: &str) {
    let Some(window) = web_sys::window() else {
        return;
    };
    let weak = Rc::downgrade(shared);
    let weak_failed = weak.clone();
    let on_response = Closure::once(move |value: JsValue| {
        let Ok(response) = value.dyn_into::<web_sys::Response>() else {
            return;
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .ok()
            .flatten()
            .and_then(|value| value.trim().parse::<u32>().ok());
        let Ok(text) = response.text() else {
            return;
        };
        let on_text = Closure::once(move |text: JsValue| {
            let text = text.as_string().unwrap_or_default();
            if let Some(shared) = weak.upgrade() {
                refused(
                    &shared,
                    status,
                    text.lines().next().unwrap_or(""),
                    retry_after,
                );
            }
        });
        let _ = text.then(&on_text);
        on_text.forget();
    });
    let on_failure = Closure::once(move |_: JsValue| {
        if let Some(shared) = weak_failed.upgrade() {
            refused(&shared, 0, "", None);
        }
    });
    let _ = window
        .fetch_with_str(&http_form(url))
        .then2(&on_response, &on_failure);
    // Each runs at most once, and the page lives as long as they may.
    on_response.forget();
    on_failure.forget();
}

/// What the bridge said about a refused WebSocket: a code or an origin
/// will not change by waiting, so the page stops until the person acts;
/// the others wait the announced `Retry-After` or the usual backoff.
fn refused(shared: &Shared, status: u16, sentence: &str, retry_after: Option<u32>) {
    let mut app = shared.borrow_mut();
    if !app.wanted || app.connection.is_some() || app.retry.is_some() {
        return;
    }
    match status {
        401 | 403 => {
            app.wanted = false;
            app.page.offer(true);
            let what = if status == 401 {
                show_code_form();
                "escriba la clave de la demo"
            } else {
                "pulse Conectar para intentarlo de nuevo"
            };
            app.page.set_status(
                State::Disconnected,
                &format!("Rechazado: {sentence} ({what})"),
            );
        }
        _ => {
            let mut delay = app.backoff.closed(now_ms(), js_sys::Math::random());
            if let Some(seconds) = retry_after {
                delay = delay.max(seconds.saturating_mul(1000));
            }
            let seconds = format!("{:.1}", f64::from(delay) / 1000.0).replace('.', ",");
            let why = if sentence.is_empty() || status == 0 || status == 426 {
                String::from("Desconectado")
            } else {
                format!("Rechazado: {sentence}")
            };
            app.page.set_status(
                State::Disconnected,
                &format!("{why} — nuevo intento en {seconds} s"),
            );
            schedule_retry(&mut app, shared, delay);
        }
    }
}

/// Shows the form that asks for the demo's code, focused.
fn show_code_form() {
    let Some(document) = web_sys::window().and_then(|window| window.document()) else {
        return;
    };
    if let Some(form) = document.get_element_by_id("clave-formulario") {
        let _ = form.remove_attribute("hidden");
    }
    if let Some(input) = document
        .get_element_by_id("clave")
        .and_then(|element| element.dyn_into::<web_sys::HtmlElement>().ok())
    {
        let _ = input.focus();
    }
}

fn schedule_retry(app: &mut App, shared: &Shared, delay_ms: u32) {
    let weak = Rc::downgrade(shared);
    let callback = Closure::<dyn FnMut()>::new(move || {
        if let Some(shared) = weak.upgrade() {
            connect(&shared);
        }
    });
    let Some(window) = web_sys::window() else {
        return;
    };
    let Ok(id) = window.set_timeout_with_callback_and_timeout_and_arguments_0(
        callback.as_ref().unchecked_ref(),
        delay_ms.min(i32::MAX as u32) as i32,
    ) else {
        return;
    };
    app.retry = Some(Retry {
        id,
        _callback: callback,
    });
}

fn toggle(shared: &Shared) {
    let wanted = {
        let mut app = shared.borrow_mut();
        app.wanted = !app.wanted;
        if !app.wanted {
            app.cancel_retry();
            if let Some(connection) = app.connection.take() {
                let _ = connection
                    .ws
                    .close_with_code_and_reason(1000, "desconectado por el usuario");
            }
            let unanswered = app.conversation.connection_lost();
            if unanswered > 0 {
                app.page.log(
                    Entry::Notice,
                    &format!("{unanswered} mensaje(s) sin respuesta: se desconectó"),
                );
            }
            app.page
                .set_status(State::Disconnected, "Desconectado (por el usuario)");
            app.page.offer(true);
        } else {
            app.backoff.reset();
        }
        app.wanted
    };
    if wanted {
        connect(shared);
    }
}

impl App {
    fn cancel_retry(&mut self) {
        if let Some(retry) = self.retry.take() {
            if let Some(window) = web_sys::window() {
                window.clear_timeout_with_handle(retry.id);
            }
        }
    }

    fn opened(&mut self) {
        // Not a reset yet: when servidor is down the bridge accepts the
        // WebSocket and closes it at once (see crate::backoff).
        self.backoff.opened(now_ms());
        self.was_open = true;
        let url = self.url.clone().unwrap_or_default();
        self.page
            .set_status(State::Connected, &format!("Conectado a {url}"));
    }

    fn open_socket(&self) -> Option<&WebSocket> {
        self.connection
            .as_ref()
            .map(|connection| &connection.ws)
            .filter(|ws| ws.ready_state() == WebSocket::OPEN)
    }

    fn send(&mut self) {
        let text = self.page.input.value();
        if text.is_empty() {
            let _ = self.page.input.focus();
            return;
        }
        let Some(ws) = self.open_socket() else {
            let what = if self.wanted {
                "esperando a la conexión"
            } else {
                "pulse Conectar"
            };
            self.page.log(
                Entry::Notice,
                &format!("Sin conexión: «{text}» no se ha enviado ({what})"),
            );
            return;
        };
        if !self.conversation.can_send() {
            self.page.log(
                Entry::Notice,
                "Demasiados mensajes sin respuesta: espere un poco",
            );
            return;
        }
        if ws.send_with_str(&format!("{text}\n")).is_err() {
            self.page
                .log(Entry::Notice, &format!("No se pudo enviar «{text}»"));
            return;
        }
        self.conversation.sent(now_ms());
        self.page.log(Entry::Sent, &format!("-> {text}"));
        self.page.input.set_value("");
        let _ = self.page.input.focus();
    }

    fn received(&mut self, event: MessageEvent) {
        // Data comes only from servidor: the connection is useful.
        self.backoff.answered();
        let data = event.data();
        let bytes = match data.as_string() {
            Some(text) => text.into_bytes(),
            None => match data.dyn_into::<js_sys::ArrayBuffer>() {
                Ok(buffer) => js_sys::Uint8Array::new(&buffer).to_vec(),
                Err(_) => return,
            },
        };
        for answer in self.conversation.received(&bytes, now_ms()) {
            self.page.log(Entry::Received, &answer.describe());
        }
    }
}
