//! The part of XEP-0004 data forms the commands need: building a form or a result (§3.1,
//! with `FORM_TYPE` per XEP-0068) and reading the values of a submitted one (§3.2).

use rookery_proto::ns;
use rookery_xml::Element;

/// `FORM_TYPE` of every XEP-0133 form (XEP-0133 §4).
pub const FORM_TYPE: &str = "http://jabber.org/protocol/admin";

/// One field of a form to fill in or of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field's `var`.
    pub var: &'static str,
    /// Its type (`jid-single`, `text-private`, `jid-multi`, `text-multi` …).
    pub kind: &'static str,
    /// The label shown to the user.
    pub label: &'static str,
    /// Whether the submitter must fill it in.
    pub required: bool,
    /// Values (for a result, or a default).
    pub values: Vec<String>,
}

impl Field {
    /// A field to fill in.
    pub const fn input(
        var: &'static str,
        kind: &'static str,
        label: &'static str,
        required: bool,
    ) -> Field {
        Field {
            var,
            kind,
            label,
            required,
            values: Vec::new(),
        }
    }

    /// A field of a result with `values`.
    pub fn result(
        var: &'static str,
        kind: &'static str,
        label: &'static str,
        values: Vec<String>,
    ) -> Field {
        Field {
            var,
            kind,
            label,
            required: false,
            values,
        }
    }
}

/// A form of `kind` (`form` or `result`) with `title` and `fields`, `FORM_TYPE` first.
pub fn build(kind: &str, title: &str, fields: &[Field]) -> Element {
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", kind)
        .with_child(Element::new("title", ns::DATA_FORMS).with_text(title));
    x.push_child(
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", "FORM_TYPE")
            .with_attr("type", "hidden")
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(FORM_TYPE)),
    );
    for f in fields {
        let mut field = Element::new("field", ns::DATA_FORMS)
            .with_attr("var", f.var)
            .with_attr("type", f.kind)
            .with_attr("label", f.label);
        if f.required {
            field.push_child(Element::new("required", ns::DATA_FORMS));
        }
        for v in &f.values {
            field.push_child(Element::new("value", ns::DATA_FORMS).with_text(v.as_str()));
        }
        x.push_child(field);
    }
    x
}

/// The values of a submitted form (`<x type='submit'/>`), by `var`.
#[derive(Debug, Default)]
pub struct Submitted {
    fields: Vec<(String, Vec<String>)>,
}

impl Submitted {
    /// Reads the submitted form in `command`, if there is one. An `<x type='cancel'/>` counts
    /// as submitted: XEP-0050 "Use of Data Forms" (cancelling is the command's `action='cancel'`, not the
    /// form's type), so its missing fields are refused like any other.
    pub fn from_command(command: &Element) -> Option<Submitted> {
        let x = command
            .get_child("x", ns::DATA_FORMS)
            .filter(|x| matches!(x.attr("type"), Some("submit" | "cancel")))?;
        let fields = x
            .children()
            .filter(|f| f.is("field", ns::DATA_FORMS))
            .filter_map(|f| {
                let var = f.attr("var")?.to_string();
                let values = f
                    .children()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(Element::text)
                    .collect();
                Some((var, values))
            })
            .collect();
        Some(Submitted { fields })
    }

    /// Every value of `var` (none when the field is missing).
    pub fn values(&self, var: &str) -> &[String] {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .map_or(&[], |(_, values)| values.as_slice())
    }

    /// The first value of `var`, trimmed, if not empty.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.values(var)
            .first()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_back_what_it_builds_once_submitted() {
        let mut x = build(
            "form",
            "Add a user",
            &[
                Field::result("accountjid", "jid-single", "JID", vec!["a@b".into()]),
                Field::result("lines", "text-multi", "Text", vec!["1".into(), "2".into()]),
            ],
        );
        x.set_attr("type", "submit");
        let command = Element::new("command", "c").with_child(x);
        let s = Submitted::from_command(&command).unwrap();
        assert_eq!(s.value("FORM_TYPE"), Some(FORM_TYPE));
        assert_eq!(s.value("accountjid"), Some("a@b"));
        assert_eq!(s.values("lines"), ["1", "2"]);
        assert!(s.values("missing").is_empty());
        assert!(Submitted::from_command(&Element::new("command", "c")).is_none());
    }
}
