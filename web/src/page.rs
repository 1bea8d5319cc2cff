//! The page's elements (written in `index.html`) and how the app changes
//! them. Text from the network only ever goes in as text, never as HTML.

use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Document, Element, HtmlButtonElement, HtmlElement, HtmlInputElement};

/// Log entries kept on the page; older ones are removed.
const MAX_LOG_ENTRIES: u32 = 500;

/// What a log entry is, for its style.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// A message sent, `-> Hola`.
    Sent,
    /// An answer, `Recibido del servidor: HOLA`.
    Received,
    /// A notice from the page itself.
    Notice,
}

/// The connection's state, for the status line's style.
#[derive(Debug, Clone, Copy)]
pub enum State {
    /// Opening.
    Connecting,
    /// Open.
    Connected,
    /// Closed.
    Disconnected,
}

/// Handles on the elements the app changes.
pub struct Page {
    document: Document,
    status: HtmlElement,
    log: Element,
    /// The message field.
    pub input: HtmlInputElement,
    /// The Conectar/Desconectar button.
    pub toggle: HtmlButtonElement,
    /// The form holding the field and the Enviar button.
    pub form: HtmlElement,
}

fn find<T: JsCast>(document: &Document, id: &str) -> Result<T, JsValue> {
    document
        .get_element_by_id(id)
        .ok_or_else(|| JsValue::from_str(&format!("falta #{id} en la página")))?
        .dyn_into::<T>()
        .map_err(|_| JsValue::from_str(&format!("#{id} no es del tipo esperado")))
}

impl Page {
    /// Finds the elements in `document`.
    pub fn find(document: Document) -> Result<Self, JsValue> {
        Ok(Self {
            status: find(&document, "estado")?,
            log: find(&document, "registro")?,
            input: find(&document, "mensaje")?,
            toggle: find(&document, "conexion")?,
            form: find(&document, "formulario")?,
            document,
        })
    }

    /// Shows the connection's state.
    pub fn set_status(&self, state: State, text: &str) {
        let name = match state {
            State::Connecting => "conectando",
            State::Connected => "conectado",
            State::Disconnected => "desconectado",
        };
        let _ = self.status.set_attribute("data-estado", name);
        self.status.set_text_content(Some(text));
    }

    /// Adds a line to the log, keeping it short.
    pub fn log(&self, entry: Entry, text: &str) {
        let Ok(item) = self.document.create_element("li") else {
            return;
        };
        let class = match entry {
            Entry::Sent => "enviado",
            Entry::Received => "recibido",
            Entry::Notice => "aviso",
        };
        item.set_class_name(class);
        item.set_text_content(Some(text));
        let _ = self.log.append_child(&item);
        while self.log.child_element_count() > MAX_LOG_ENTRIES {
            match self.log.first_element_child() {
                Some(oldest) => oldest.remove(),
                None => break,
            }
        }
        item.scroll_into_view_with_bool(false);
    }

    /// Labels the toggle for what pressing it will do.
    pub fn offer(&self, connect: bool) {
        let label = if connect { "Conectar" } else { "Desconectar" };
        self.toggle.set_text_content(Some(label));
    }
}
