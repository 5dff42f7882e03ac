//! Templates: handlebars in strict mode with two registries — HTML-escaping for the html
//! part, plain for the text part and the subject.
//!
//! Handlebars only understands `serde_json::Value` contexts, so every render through it
//! converts the row into a JSON map. Most campaign templates are nothing but literal text and
//! `{{field}}` / `{{{field}}}` substitutions, so at compile time each template is also turned
//! into a flat "plan" of literal and field segments when that is possible; such templates are
//! rendered directly from the row's `&str` values, byte-for-byte the same as handlebars would
//! (same escape function, same strict-mode semantics), without any JSON conversion. Templates
//! with blocks, helpers or partials go through handlebars.
//!
//! ## Missing and empty fields
//!
//! Handlebars's strict mode rejects a missing variable except inside `{{#if}}` (the condition
//! itself never errors). On top of that, a field referenced *outside* any `{{#if}}` /
//! `{{#unless}}` block must be present **and non-empty** (whitespace-only counts as empty):
//! an unconditional `Hello {{first_name}},` with an empty cell would go out as `Hello ,`,
//! which is exactly the mistake strict mode is there to prevent. Templates that want to
//! tolerate an empty cell say so with `{{#if first_name}}…{{/if}}`.

use std::collections::BTreeSet;
use std::path::Path;

use handlebars::template::{BlockParam, HelperTemplate, Parameter, Template, TemplateElement};
use handlebars::{Context, Handlebars, PathSeg, RenderErrorReason};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A recipient row as templates see it: column names and this row's values, same length.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// Header names of the list file this row came from.
    pub columns: &'a [String],
    /// The row's values, in column order (missing trailing cells may be absent).
    pub values: &'a [String],
}

impl<'a> Row<'a> {
    /// The value of column `name` in this row, `None` when the column does not exist or the
    /// row is too short to have it. With duplicate column names the last one wins, the same
    /// as in the serialised map handlebars sees.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let i = self.columns.iter().rposition(|c| c == name)?;
        self.values.get(i).map(String::as_str)
    }
}

/// The row as a map column → value, so it can be a handlebars context without building an
/// intermediate map first. Trailing columns the row has no value for are absent (so strict
/// mode reports them as missing).
impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.columns.len().min(self.values.len());
        let mut map = serializer.serialize_map(Some(n))?;
        for (c, v) in self.columns.iter().zip(self.values.iter()) {
            map.serialize_entry(c, v)?;
        }
        map.end()
    }
}

/// Variables blast provides to every template, beside the list's columns (a column of the
/// same name is shadowed: a list cannot spoof the unsubscribe link).
pub const BUILTINS: &[&str] = &["unsubscribe_url"];

/// A row and blast's own variables ([`BUILTINS`]), as the handlebars context.
#[derive(Clone, Copy)]
struct WithBuiltins<'a> {
    row: Row<'a>,
    extra: &'a [(&'a str, &'a str)],
}

impl WithBuiltins<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match self.extra.iter().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(v),
            None => self.row.get(name),
        }
    }
}

impl Serialize for WithBuiltins<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.row.columns.len().min(self.row.values.len());
        let mut map = serializer.serialize_map(Some(n + self.extra.len()))?;
        for (c, v) in self.row.columns.iter().zip(self.row.values.iter()) {
            if !self.extra.iter().any(|(n, _)| n == c) {
                map.serialize_entry(c, v)?;
            }
        }
        for (n, v) in self.extra {
            map.serialize_entry(n, v)?;
        }
        map.end()
    }
}

/// The rendered parts of one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Rendered subject (may still contain CR/LF: `message` sanitises it).
    pub subject: String,
    /// Rendered text part, if the campaign has one.
    pub text: Option<String>,
    /// Rendered HTML part, if the campaign has one.
    pub html: Option<String>,
    /// The campaign's extra headers (`[campaign.headers]`), values rendered with the plain
    /// registry (may still contain CR/LF: `message` sanitises them like every header).
    pub headers: Vec<(String, String)>,
}

/// A template could not be compiled (config error, before anything is sent).
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct TemplateError {
    /// The template file (or `subject`).
    pub file: String,
    /// What handlebars said, with line/column when it has them.
    pub message: String,
}

/// One row could not be rendered (reported and skipped, not fatal).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RowError(pub String);

/// Registry names of the three templates.
const SUBJECT: &str = "subject";
const TEXT: &str = "text";
const HTML: &str = "html";

/// Helpers registered by default in handlebars 6 (without optional features). A name-only
/// expression such as `{{len}}` calls the helper rather than looking up a column, so the
/// fast path must not treat these names as fields.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "raw", "log", "eq", "ne", "gt", "gte", "lt", "lte",
    "and", "or", "not", "len",
];

/// One piece of a flattened template.
#[derive(Debug)]
enum Seg {
    /// Literal text.
    Raw(String),
    /// Index into [`Templates::fields`]; `escape` = HTML-escape the value.
    Field { idx: usize, escape: bool },
}

/// How one part is rendered.
#[derive(Debug)]
enum Part {
    /// Flattened: literals and plain field substitutions only.
    Plan { segs: Vec<Seg>, size_hint: usize },
    /// Needs the handlebars engine (blocks, helpers, …); the name in the registry.
    Engine,
}

/// The campaign's compiled templates.
pub struct Templates {
    /// Escapes HTML; only the html part.
    html_reg: Handlebars<'static>,
    /// `no_escape`: subject and text part.
    plain_reg: Handlebars<'static>,
    subject: Part,
    text: Option<Part>,
    html: Option<Part>,
    /// Extra headers: name, registry name, how its value is rendered.
    headers: Vec<(String, String, Part)>,
    /// Every top-level field the templates refer to (sorted, unique).
    fields: Vec<String>,
    /// Indices into `fields` that must be present and non-empty in every row.
    required: Vec<usize>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("fields", &self.fields)
            .field("required", &self.required)
            .finish_non_exhaustive()
    }
}

impl Templates {
    /// Compiles the subject template and the text/html template sources.
    /// `text`/`html` are (path for error messages, source).
    pub fn compile(
        subject: &str,
        text: Option<(&Path, &str)>,
        html: Option<(&Path, &str)>,
    ) -> Result<Self, TemplateError> {
        Self::compile_with_headers(subject, text, html, &[])
    }

    /// [`Templates::compile`] plus the campaign's extra headers, whose values are templates
    /// too (`X-User: {{first_name}}`), rendered like the subject: plain, fields required.
    pub fn compile_with_headers(
        subject: &str,
        text: Option<(&Path, &str)>,
        html: Option<(&Path, &str)>,
        headers: &[(String, String)],
    ) -> Result<Self, TemplateError> {
        let mut plain_reg = Handlebars::new();
        plain_reg.set_strict_mode(true);
        plain_reg.register_escape_fn(handlebars::no_escape);
        let mut html_reg = Handlebars::new();
        html_reg.set_strict_mode(true);
        // The default escape fn is handlebars::html_escape; the fast path mirrors it.

        register(&mut plain_reg, SUBJECT, "subject", subject)?;
        if let Some((path, src)) = text {
            register(&mut plain_reg, TEXT, &path.display().to_string(), src)?;
        }
        if let Some((path, src)) = html {
            register(&mut html_reg, HTML, &path.display().to_string(), src)?;
        }
        // Registry names cannot clash with the three parts (they contain a space).
        let header_regs: Vec<String> = headers.iter().map(|(n, _)| format!("header {n}")).collect();
        for ((name, value), reg) in headers.iter().zip(&header_regs) {
            register(
                &mut plain_reg,
                reg,
                &format!("campaign.headers.{name}"),
                value,
            )?;
        }

        // Walk every template once to learn which fields it refers to, and where.
        let mut walk = Walk::default();
        let compiled: [(Option<&Template>, bool); 3] = [
            (plain_reg.get_template(SUBJECT), false),
            (plain_reg.get_template(TEXT), false),
            (html_reg.get_template(HTML), true),
        ];
        let files = [
            "subject".to_string(),
            text.map(|(p, _)| p.display().to_string())
                .unwrap_or_default(),
            html.map(|(p, _)| p.display().to_string())
                .unwrap_or_default(),
        ];
        for ((tpl, _), file) in compiled.iter().zip(&files) {
            if let Some(t) = tpl {
                walk.template(t, 0, false, &[]);
                walk.check_names(file)?;
            }
        }
        for reg in &header_regs {
            if let Some(t) = plain_reg.get_template(reg) {
                walk.template(t, 0, false, &[]);
            }
        }
        let fields: Vec<String> = walk.all.iter().cloned().collect();
        let required = walk
            .required
            .iter()
            .map(|f| fields.binary_search(f).expect("required ⊆ all"))
            .collect();

        let plan = |tpl: Option<&Template>, html: bool| tpl.map(|t| plan(t, html, &fields));
        let subject_part = plan(compiled[0].0, false).expect("subject registered");
        let text_part = plan(compiled[1].0, false);
        let html_part = plan(compiled[2].0, true);
        let header_parts = headers
            .iter()
            .zip(header_regs)
            .map(|((name, _), reg)| {
                let part = plan(plain_reg.get_template(&reg), false).expect("header registered");
                (name.clone(), reg, part)
            })
            .collect();
        Ok(Templates {
            html_reg,
            plain_reg,
            subject: subject_part,
            text: text_part,
            html: html_part,
            headers: header_parts,
            fields,
            required,
        })
    }

    /// Every top-level variable name the templates refer to (to check against list headers).
    ///
    /// This is the first path segment of every variable outside `{{#each}}` / `{{#with}}`
    /// blocks (and of `../x` / `@root.x` paths inside them); `this`, `@index`-style locals
    /// and `as |x|` block parameters are not fields.
    pub fn referenced_fields(&self) -> BTreeSet<String> {
        self.fields.iter().cloned().collect()
    }

    /// The fields used outside `{{#if}}`: a row (or blast) that lacks one cannot render.
    pub fn required_fields(&self) -> BTreeSet<String> {
        self.required
            .iter()
            .map(|&i| self.fields[i].clone())
            .collect()
    }

    /// Renders all parts for one row. A referenced field that is missing or empty in this
    /// row (outside `{{#if}}`) is a [`RowError`].
    pub fn render(&self, row: Row<'_>) -> Result<Rendered, RowError> {
        self.render_with(row, &[])
    }

    /// [`Templates::render`] with blast's own variables (`("unsubscribe_url", "https://…")`);
    /// a [`BUILTINS`] name not given here is missing, like an absent column.
    pub fn render_with(&self, row: Row<'_>, extra: &[(&str, &str)]) -> Result<Rendered, RowError> {
        let row = WithBuiltins { row, extra };
        // Resolve each field once; the plans index into this.
        let mut values: Vec<Option<&str>> = Vec::with_capacity(self.fields.len());
        values.extend(self.fields.iter().map(|f| row.get(f)));
        for &i in &self.required {
            match values[i] {
                None => return Err(RowError(format!("missing field `{}`", self.fields[i]))),
                Some(v) if v.trim().is_empty() => {
                    return Err(RowError(format!("field `{}` is empty", self.fields[i])))
                }
                Some(_) => {}
            }
        }
        // Built lazily: only templates that need the engine pay for the JSON conversion.
        let mut ctx: Option<Context> = None;
        let subject = self.part(
            &self.subject,
            &self.plain_reg,
            SUBJECT,
            row,
            &values,
            &mut ctx,
        )?;
        let text = match &self.text {
            Some(p) => Some(self.part(p, &self.plain_reg, TEXT, row, &values, &mut ctx)?),
            None => None,
        };
        let html = match &self.html {
            Some(p) => Some(self.part(p, &self.html_reg, HTML, row, &values, &mut ctx)?),
            None => None,
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for (name, reg, p) in &self.headers {
            let v = self.part(p, &self.plain_reg, reg, row, &values, &mut ctx)?;
            headers.push((name.clone(), v));
        }
        Ok(Rendered {
            subject,
            text,
            html,
            headers,
        })
    }

    fn part(
        &self,
        part: &Part,
        reg: &Handlebars<'static>,
        name: &str,
        row: WithBuiltins<'_>,
        values: &[Option<&str>],
        ctx: &mut Option<Context>,
    ) -> Result<String, RowError> {
        match part {
            Part::Plan { segs, size_hint } => {
                let mut out = String::with_capacity(*size_hint);
                for seg in segs {
                    match seg {
                        Seg::Raw(s) => out.push_str(s),
                        Seg::Field { idx, escape } => {
                            // Every field of a plan is unconditional, hence required and
                            // checked present above; `unwrap_or` only guards the invariant.
                            let v = values[*idx].unwrap_or_default();
                            if *escape {
                                push_html_escaped(&mut out, v);
                            } else {
                                out.push_str(v);
                            }
                        }
                    }
                }
                Ok(out)
            }
            Part::Engine => {
                if ctx.is_none() {
                    *ctx = Some(Context::wraps(row).map_err(|e| RowError(e.to_string()))?);
                }
                let c = ctx.as_ref().expect("set above");
                reg.render_with_context(name, c)
                    .map_err(|e| match e.reason() {
                        RenderErrorReason::MissingVariable(Some(v)) => {
                            RowError(format!("missing field `{v}` (in {name})"))
                        }
                        _ => RowError(format!("{name}: {e}")),
                    })
            }
        }
    }
}

fn register(
    reg: &mut Handlebars<'static>,
    name: &str,
    file: &str,
    src: &str,
) -> Result<(), TemplateError> {
    reg.register_template_string(name, src).map_err(|e| {
        let message = match e.pos() {
            Some((line, col)) => format!("line {line}, column {col}: {}", e.reason()),
            None => e.reason().to_string(),
        };
        TemplateError {
            file: file.to_owned(),
            message,
        }
    })
}

/// Exactly handlebars's `html_escape` (handlebars 6), appending instead of allocating.
fn push_html_escaped(out: &mut String, s: &str) {
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let rep = match b {
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'&' => "&amp;",
            b'\'' => "&#x27;",
            b'`' => "&#x60;",
            b'=' => "&#x3D;",
            _ => continue,
        };
        out.push_str(&s[last..i]);
        out.push_str(rep);
        last = i + 1;
    }
    out.push_str(&s[last..]);
}

/// A plain single-segment variable name (`{{x}}`, `{{[first name]}}`, `{{this.x}}`).
fn simple_var(ht: &HelperTemplate) -> Option<&str> {
    if ht.block || !ht.params.is_empty() || !ht.hash.is_empty() {
        return None;
    }
    let name = match &ht.name {
        Parameter::Path(handlebars::Path::Relative((segs, _))) => match segs.as_slice() {
            [PathSeg::Named(n)] => n.as_str(),
            _ => return None,
        },
        Parameter::Name(n) => n.as_str(),
        _ => return None,
    };
    if BUILTIN_HELPERS.contains(&name) {
        return None;
    }
    Some(name)
}

/// Flattens a template into literal and field segments, or says it needs the engine.
fn plan(tpl: &Template, html: bool, fields: &[String]) -> Part {
    let mut segs = Vec::with_capacity(tpl.elements.len());
    let mut size_hint = 0;
    for el in &tpl.elements {
        match el {
            TemplateElement::RawString(s) => {
                size_hint += s.len();
                segs.push(Seg::Raw(s.clone()));
            }
            TemplateElement::Comment(_) => {}
            TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                let Some(name) = simple_var(ht) else {
                    return Part::Engine;
                };
                let Ok(idx) = fields.binary_search_by(|f| f.as_str().cmp(name)) else {
                    return Part::Engine;
                };
                // `{{x}}` escapes in the html registry, `{{{x}}}` never does.
                let escape = html && matches!(el, TemplateElement::Expression(_));
                size_hint += 32;
                segs.push(Seg::Field { idx, escape });
            }
            _ => return Part::Engine,
        }
    }
    Part::Plan { segs, size_hint }
}

/// Collects field names from compiled templates, and the partials and helpers each uses.
#[derive(Default)]
struct Walk {
    all: BTreeSet<String>,
    /// Referenced outside any `if`/`unless` block.
    required: BTreeSet<String>,
    /// Line of the element being walked (for errors).
    line: Option<usize>,
    /// Partials used by the current template, with their lines.
    partials: Vec<(String, Option<usize>)>,
    /// Inline partials (`{{#*inline "name"}}`) the current template defines.
    inline: BTreeSet<String>,
    /// Helpers called (with arguments) by the current template that handlebars does not have.
    unknown_helpers: Vec<(String, Option<usize>)>,
}

impl Walk {
    /// Fails on a partial or helper the current template uses but nobody defines: no partial
    /// is registered and only handlebars's built-in helpers are, so such a template would
    /// fail every row at render time — a campaign that "completes" having sent nobody.
    /// Resets the per-template lists.
    fn check_names(&mut self, file: &str) -> Result<(), TemplateError> {
        let at = |line: &Option<usize>| line.map(|l| format!("line {l}: ")).unwrap_or_default();
        let partials = std::mem::take(&mut self.partials);
        let inline = std::mem::take(&mut self.inline);
        let helpers = std::mem::take(&mut self.unknown_helpers);
        if let Some((name, line)) = partials.iter().find(|(n, _)| !inline.contains(n)) {
            return Err(TemplateError {
                file: file.to_owned(),
                message: format!(
                    "{}partial `{name}` is not defined (blast registers no partials; define it in \
                     the template with {{{{#*inline \"{name}\"}}}}…{{{{/inline}}}})",
                    at(line)
                ),
            });
        }
        if let Some((name, line)) = helpers.first() {
            return Err(TemplateError {
                file: file.to_owned(),
                message: format!(
                    "{}helper `{name}` is not defined (available: {})",
                    at(line),
                    BUILTIN_HELPERS.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// A partial's or decorator's name, when it is a plain name or a string.
    fn static_name(p: &Parameter) -> Option<String> {
        match p {
            Parameter::Literal(serde_json::Value::String(s)) => Some(s.clone()),
            other => param_name(other),
        }
    }

    /// `depth`: how many context-changing blocks (`each`, `with`) we are inside;
    /// `cond`: inside an `if`/`unless` (either branch); `locals`: block params in scope.
    fn template(&mut self, t: &Template, depth: usize, cond: bool, locals: &[String]) {
        for (i, el) in t.elements.iter().enumerate() {
            if let Some(m) = t.mapping.get(i) {
                self.line = Some(m.0);
            }
            match el {
                TemplateElement::Expression(ht) | TemplateElement::HtmlExpression(ht) => {
                    self.helper(ht, depth, cond, locals)
                }
                TemplateElement::HelperBlock(ht) => self.helper(ht, depth, cond, locals),
                TemplateElement::DecoratorExpression(dt)
                | TemplateElement::DecoratorBlock(dt)
                | TemplateElement::PartialExpression(dt)
                | TemplateElement::PartialBlock(dt) => {
                    let is_partial = matches!(
                        el,
                        TemplateElement::PartialExpression(_) | TemplateElement::PartialBlock(_)
                    );
                    let name = Self::static_name(&dt.name);
                    if is_partial {
                        // `@partial-block` and computed names cannot be checked here.
                        if let Some(n) = name.filter(|n| !n.starts_with('@')) {
                            self.partials.push((n, self.line));
                        }
                    } else if name.as_deref() == Some("inline") {
                        self.inline
                            .extend(dt.params.first().and_then(Self::static_name));
                    }
                    for p in dt.params.iter().chain(dt.hash.values()) {
                        self.param(p, depth, cond, locals);
                    }
                    if let Some(t) = &dt.template {
                        self.template(t, depth, cond, locals);
                    }
                }
                // RawString, Comment, and whatever later versions add.
                _ => {}
            }
        }
    }

    fn helper(&mut self, ht: &HelperTemplate, depth: usize, cond: bool, locals: &[String]) {
        let helper_name = match &ht.name {
            Parameter::Name(n) => Some(n.as_str()),
            Parameter::Path(handlebars::Path::Relative((segs, _))) => match segs.as_slice() {
                [PathSeg::Named(n)] => Some(n.as_str()),
                _ => None,
            },
            _ => None,
        };
        let is_call = ht.block || !ht.params.is_empty() || !ht.hash.is_empty();
        if !is_call && !helper_name.is_some_and(|n| BUILTIN_HELPERS.contains(&n)) {
            // A plain value expression: the name is the variable.
            self.param(&ht.name, depth, cond, locals);
            return;
        }
        if let Parameter::Subexpression(_) = &ht.name {
            self.param(&ht.name, depth, cond, locals);
        }
        if let Some(n) = helper_name {
            // A call with arguments needs a helper by that name; blocks of an unknown name
            // are handlebars's block-helper-missing (the value as context), not an error.
            if !ht.block && !BUILTIN_HELPERS.contains(&n) {
                self.unknown_helpers.push((n.to_owned(), self.line));
            }
        }
        let conditional = matches!(helper_name, Some("if" | "unless"));
        // The condition of an `if` may legitimately be missing or empty.
        let params_cond = cond || conditional;
        for p in ht.params.iter().chain(ht.hash.values()) {
            self.param(p, depth, params_cond, locals);
        }
        let scoped = matches!(helper_name, Some("each" | "with"));
        if let Some(t) = &ht.template {
            if scoped {
                let mut inner = locals.to_vec();
                match &ht.block_param {
                    Some(BlockParam::Single(p)) => inner.extend(param_name(p)),
                    Some(BlockParam::Pair((a, b))) => {
                        inner.extend(param_name(a));
                        inner.extend(param_name(b));
                    }
                    _ => {}
                }
                self.template(t, depth + 1, cond, &inner);
            } else {
                self.template(t, depth, cond || conditional, locals);
            }
        }
        if let Some(t) = &ht.inverse {
            self.template(t, depth, cond || conditional, locals);
        }
    }

    fn param(&mut self, p: &Parameter, depth: usize, cond: bool, locals: &[String]) {
        match p {
            Parameter::Name(n) if depth == 0 && !locals.iter().any(|l| l == n) => self.add(n, cond),
            Parameter::Path(handlebars::Path::Relative((segs, _))) => {
                let mut level = depth;
                let mut it = segs.iter().peekable();
                while let Some(seg) = it.peek() {
                    match seg {
                        PathSeg::Ruled(r) if format!("{r:?}") == "path_root" => level = 0,
                        PathSeg::Ruled(r) if format!("{r:?}") == "path_up" => {
                            level = level.saturating_sub(1)
                        }
                        PathSeg::Ruled(_) => {}
                        _ => break,
                    }
                    it.next();
                }
                if let Some(PathSeg::Named(n)) = it.next() {
                    // Block params are only visible inside their block (depth > 0).
                    let is_local = level == depth && locals.iter().any(|l| l == n);
                    if level == 0 && !is_local {
                        self.add(n, cond);
                    }
                }
            }
            Parameter::Subexpression(s) => {
                // Subexpressions are always expressions in handlebars 6.
                if let TemplateElement::Expression(ht) = s.as_element() {
                    self.helper(ht, depth, cond, locals)
                }
            }
            // Locals (`@index`), literals.
            _ => {}
        }
    }

    fn add(&mut self, name: &str, cond: bool) {
        if name.is_empty() {
            return;
        }
        self.all.insert(name.to_owned());
        if !cond {
            self.required.insert(name.to_owned());
        }
    }
}

fn param_name(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(handlebars::Path::Relative((segs, _))) => match segs.as_slice() {
            [PathSeg::Named(n)] => Some(n.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn fast_path_matches_engine() {
        let columns = cols(&["first name", "x", "email"]);
        let values = cols(&["<b>Ann</b> & 'co' `=`", "é\r\nz", "a@b.example"]);
        let row = Row {
            columns: &columns,
            values: &values,
        };
        let src = "Hi {{[first name]}} / {{{[first name]}}} {{x}}{{! c }} {{this.email}}\n\
                   a  {{~x~}}  b\n  {{x}}  \n{{!-- long --}}\n";
        let t = Templates::compile(
            "S {{x}}",
            Some((Path::new("t"), src)),
            Some((Path::new("h"), src)),
        )
        .unwrap();
        assert!(matches!(t.subject, Part::Plan { .. }));
        assert!(matches!(t.html, Some(Part::Plan { .. })));
        let fast = t.render(row).unwrap();
        let mut h = Handlebars::new();
        h.set_strict_mode(true);
        let html = h.render_template(src, &row).unwrap();
        h.register_escape_fn(handlebars::no_escape);
        let text = h.render_template(src, &row).unwrap();
        assert_eq!(fast.html.unwrap(), html);
        assert_eq!(fast.text.unwrap(), text);
        assert_eq!(fast.subject, "S é\r\nz");
    }

    #[test]
    fn walk_scopes() {
        let src = "{{#each items as |it|}}{{it}}{{name}}{{../top}}{{@index}}{{/each}}\
                   {{#if flag}}{{inner}}{{else}}{{other}}{{/if}}{{lookup tbl key}}{{len}}\
                   {{#with w}}{{wx}}{{@root.rootx}}{{/with}}{{#*inline \"part\"}}x{{/inline}}{{> part p=pp}}";
        let t = Templates::compile("{{s}}", Some((Path::new("t"), src)), None);
        let t = t.unwrap();
        let got: Vec<_> = t.referenced_fields().into_iter().collect();
        assert_eq!(
            got,
            ["flag", "inner", "items", "key", "other", "pp", "rootx", "s", "tbl", "top", "w"]
        );
        let req: Vec<_> = t.required.iter().map(|&i| t.fields[i].as_str()).collect();
        assert_eq!(req, ["items", "key", "pp", "rootx", "s", "tbl", "top", "w"]);
    }

    /// Issue 11.4: a partial or helper nobody defined fails at compile time (a config error
    /// before anything is sent), naming the file and the name; it used to fail every row at
    /// render time, so the campaign "completed" with everyone skipped.
    #[test]
    fn missing_partials_and_helpers_are_compile_errors() {
        let text = |src: &str| Templates::compile("S", Some((Path::new("t.txt.hbs"), src)), None);
        let e = text("Hi {{first_name}}\n{{> footer}}\n").unwrap_err();
        assert_eq!(e.file, "t.txt.hbs");
        assert!(
            e.message.contains("footer") && e.message.contains("partial"),
            "{e}"
        );
        let e = text("{{#> layout}}body{{/layout}}").unwrap_err();
        assert!(e.message.contains("layout"), "{e}");
        let e = text("Hi {{shout first_name}}").unwrap_err();
        assert!(
            e.message.contains("shout") && e.message.contains("helper"),
            "{e}"
        );
        let e = text("{{#if (shout x)}}y{{/if}}").unwrap_err();
        assert!(e.message.contains("shout"), "{e}");
        let e = Templates::compile("{{> subj}}", None, None).unwrap_err();
        assert_eq!(e.file, "subject");
        // Defined in the template itself, or built in: fine.
        text("{{#*inline \"footer\"}}bye{{/inline}}Hi {{first_name}}{{> footer}}").unwrap();
        text("{{#if (eq a b)}}{{len items}}{{lookup t k}}{{/if}}").unwrap();
    }
}
#[cfg(test)]
mod builtin_tests {
    use super::*;

    #[test]
    fn a_conditional_builtin_is_not_required() {
        let html = include_str!("../templates/example.html.hbs");
        let text = include_str!("../templates/example.txt.hbs");
        let t = Templates::compile_with_headers(
            "s",
            Some((std::path::Path::new("t.txt"), text)),
            Some((std::path::Path::new("t.html"), html)),
            &[],
        )
        .unwrap();
        assert!(t.referenced_fields().contains("unsubscribe_url"));
        assert!(
            !t.required_fields().contains("unsubscribe_url"),
            "{:?}",
            t.required_fields()
        );
        let bare = Templates::compile_with_headers(
            "s",
            Some((std::path::Path::new("t"), "{{unsubscribe_url}}")),
            None,
            &[],
        )
        .unwrap();
        assert!(bare.required_fields().contains("unsubscribe_url"));
    }
}
