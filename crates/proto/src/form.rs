//! XEP-0004 data forms, as much as pubsub, MUC and MAM use: forms with typed fields and
//! options (node and room configuration, subscription options, approval requests, meta-data,
//! archive queries), and submitted forms read back.

use rookery_xml::Element;

use crate::ns;

/// A form field (XEP-0004 §3.2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field {
    /// The `var` attribute.
    pub var: String,
    /// The `type` attribute (`boolean`, `list-single`, `text-single`, `hidden`, …).
    pub kind: Option<&'static str>,
    /// The `label` attribute.
    pub label: Option<String>,
    /// The values, in order.
    pub values: Vec<String>,
    /// `<option/>`s of list fields: (label, value).
    pub options: Vec<(Option<String>, String)>,
    /// A list field that takes values beyond its options (XEP-0122 §3.2,
    /// `<validate datatype='xs:string'><open/></validate>`): MAM's `ids`, whose options would
    /// be the whole archive.
    pub open: bool,
}

impl Field {
    /// A field with one value.
    pub fn new(var: &str, kind: &'static str, value: impl Into<String>) -> Field {
        Field {
            var: var.to_string(),
            kind: Some(kind),
            values: vec![value.into()],
            ..Field::default()
        }
    }

    /// Adds a label.
    #[must_use]
    pub fn label(mut self, label: &str) -> Field {
        self.label = Some(label.to_string());
        self
    }

    /// Adds list options (their labels are their values).
    #[must_use]
    pub fn options(mut self, values: &[&str]) -> Field {
        self.options = values.iter().map(|v| (None, (*v).to_string())).collect();
        self
    }

    /// The first value.
    pub fn value(&self) -> Option<&str> {
        self.values.first().map(String::as_str)
    }
}

/// A data form (XEP-0004 §3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// `form`, `submit`, `cancel` or `result`.
    pub kind: String,
    /// The fields in order (`FORM_TYPE` included).
    pub fields: Vec<Field>,
}

/// XEP-0004 §3.3: boolean values are `0`/`false` and `1`/`true`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

impl Form {
    /// An empty form of `kind` with the hidden `FORM_TYPE` field.
    pub fn new(kind: &str, form_type: &str) -> Form {
        Form {
            kind: kind.to_string(),
            fields: vec![Field::new("FORM_TYPE", "hidden", form_type)],
        }
    }

    /// Reads an `<x xmlns='jabber:x:data'/>`; `None` if `el` is not one.
    pub fn parse(el: &Element) -> Option<Form> {
        if !el.is("x", ns::DATA_FORMS) {
            return None;
        }
        let fields = el
            .children()
            .filter(|c| c.is("field", ns::DATA_FORMS))
            .filter_map(|f| {
                let var = f.attr("var")?.to_string();
                Some(Field {
                    var,
                    kind: None,
                    label: f.attr("label").map(str::to_string),
                    values: f
                        .children()
                        .filter(|v| v.is("value", ns::DATA_FORMS))
                        .map(Element::text)
                        .collect(),
                    options: Vec::new(),
                    open: false,
                })
            })
            .collect();
        Some(Form {
            kind: el.attr("type").unwrap_or("form").to_string(),
            fields,
        })
    }

    /// The first data form child of `parent`.
    pub fn child_of(parent: &Element) -> Option<Form> {
        parent.children().find_map(Form::parse)
    }

    /// The `FORM_TYPE` value.
    pub fn form_type(&self) -> Option<&str> {
        self.get("FORM_TYPE").and_then(Field::value)
    }

    /// The field `var`.
    pub fn get(&self, var: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.var == var)
    }

    /// The first value of field `var`.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.get(var).and_then(Field::value)
    }

    /// Appends a field.
    pub fn push(&mut self, field: Field) {
        self.fields.push(field);
    }

    /// Builder form of [`Form::push`].
    #[must_use]
    pub fn with(mut self, field: Field) -> Form {
        self.push(field);
        self
    }

    /// The fields other than `FORM_TYPE`.
    pub fn data_fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter().filter(|f| f.var != "FORM_TYPE")
    }

    /// The `<x/>` element. Submitted forms carry only vars and values.
    pub fn to_element(&self) -> Element {
        let submit = self.kind == "submit";
        let mut x = Element::new("x", ns::DATA_FORMS).with_attr("type", self.kind.clone());
        for f in &self.fields {
            let mut el = Element::new("field", ns::DATA_FORMS).with_attr("var", f.var.clone());
            if let Some(k) = f.kind {
                if !submit || k == "hidden" {
                    el.set_attr("type", k);
                }
            }
            if !submit {
                if let Some(l) = &f.label {
                    el.set_attr("label", l.clone());
                }
                if f.open {
                    el.push_child(
                        Element::new("validate", ns::XDATA_VALIDATE)
                            .with_attr("datatype", "xs:string")
                            .with_child(Element::new("open", ns::XDATA_VALIDATE)),
                    );
                }
                for (label, value) in &f.options {
                    let mut o = Element::new("option", ns::DATA_FORMS);
                    if let Some(l) = label {
                        o.set_attr("label", l.clone());
                    }
                    o.push_child(Element::new("value", ns::DATA_FORMS).with_text(value.clone()));
                    el.push_child(o);
                }
            }
            for v in &f.values {
                el.push_child(Element::new("value", ns::DATA_FORMS).with_text(v.clone()));
            }
            x.push_child(el);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip() {
        let f = Form::new("submit", ns::pubsub::NODE_CONFIG)
            .with(Field::new("pubsub#title", "text-single", "a < b"))
            .with(Field {
                var: "pubsub#roster_groups_allowed".into(),
                kind: Some("list-multi"),
                values: vec!["x".into(), "y".into()],
                ..Field::default()
            });
        let back = Form::parse(&f.to_element()).unwrap();
        assert_eq!(back.form_type(), Some(ns::pubsub::NODE_CONFIG));
        assert_eq!(back.value("pubsub#title"), Some("a < b"));
        assert_eq!(
            back.get("pubsub#roster_groups_allowed").unwrap().values,
            ["x", "y"]
        );
        assert_eq!(parse_bool("true"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("yes"), None);
    }
}
