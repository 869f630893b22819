//! Exclusive XML canonicalisation without comments (`http://www.w3.org/2001/10/xml-exc-c14n#`)
//! over a `roxmltree` tree, for the two node sets a liste blanche signature needs:
//! - the whole document minus one element subtree (Reference `URI=""` + enveloped transform);
//! - one element subtree (`SignedInfo`).
//!
//! No Rust crate implements exc-c14n over a read-only tree that we could check; the subset here
//! (no `InclusiveNamespaces` prefix list, no comments, whole subtrees only) is tested
//! byte-for-byte against `xmlsec1`'s digests in `tests/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use roxmltree::{Node, NodeId, NodeType};

/// Canonical form of the whole document, leaving out the subtree rooted at `omit`
/// (the enveloped `ds:Signature`).
pub fn document(doc: &roxmltree::Document<'_>, omit: Option<NodeId>) -> String {
    let mut out = String::with_capacity(doc.input_text().len());
    let root = doc.root();
    let mut seen_element = false;
    for child in root.children() {
        match child.node_type() {
            NodeType::Element => {
                element(&mut out, child, &BTreeMap::new(), omit);
                seen_element = true;
            }
            NodeType::PI => {
                if seen_element {
                    out.push('\n');
                }
                pi(&mut out, child);
                if !seen_element {
                    out.push('\n');
                }
            }
            // Comments are not in the node set; whitespace outside the root element is not
            // part of the data model.
            NodeType::Comment | NodeType::Text | NodeType::Root => {}
        }
    }
    out
}

/// Canonical form of one element subtree (its ancestors' namespaces are rendered only where
/// the subtree visibly uses them, as exclusive c14n requires).
pub fn subtree(node: Node<'_, '_>) -> String {
    let mut out = String::new();
    element(&mut out, node, &BTreeMap::new(), None);
    out
}

/// `rendered`: namespace declarations (prefix, "" for the default) in force in the output at
/// the parent element.
fn element<'a, 'i: 'a>(
    out: &mut String,
    node: Node<'a, 'i>,
    rendered: &BTreeMap<&'a str, &'a str>,
    omit: Option<NodeId>,
) {
    if Some(node.id()) == omit {
        return;
    }
    let text = node.document().input_text();
    let qname = element_qname(node);
    let prefix = qname.split_once(':').map_or("", |(p, _)| p);
    // Visibly utilised prefixes: the element's own, and those of its prefixed attributes.
    let mut used: Vec<(&'a str, &'a str)> =
        vec![(prefix, node.tag_name().namespace().unwrap_or(""))];
    let mut attrs: Vec<(&'a str, &'a str, &'a str, &'a str)> = Vec::new();
    for a in node.attributes() {
        let aq = &text[a.range_qname()];
        let uri = a.namespace().unwrap_or("");
        if let Some((p, _)) = aq.split_once(':')
            && p != "xml"
            && !used.iter().any(|(q, _)| *q == p)
        {
            used.push((p, uri));
        }
        attrs.push((uri, a.name(), aq, a.value()));
    }
    used.sort_unstable();
    let mut decls: Vec<(&'a str, &'a str)> = Vec::new();
    for (p, uri) in used {
        let current = rendered.get(p).copied();
        // An unprefixed element without namespace needs xmlns="" only to undo a rendered default.
        let needed = if p.is_empty() && uri.is_empty() {
            current.is_some_and(|c| !c.is_empty())
        } else {
            current != Some(uri)
        };
        if needed {
            decls.push((p, uri));
        }
    }
    out.push('<');
    out.push_str(qname);
    for (p, uri) in &decls {
        if p.is_empty() {
            out.push_str(" xmlns=\"");
        } else {
            let _ = write!(out, " xmlns:{p}=\"");
        }
        escape_attr(out, uri);
        out.push('"');
    }
    if attrs.len() > 1 {
        attrs.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    }
    for (_, _, aq, value) in &attrs {
        let _ = write!(out, " {aq}=\"");
        escape_attr(out, value);
        out.push('"');
    }
    out.push('>');
    let extended;
    let mine = if decls.is_empty() {
        rendered
    } else {
        let mut m = rendered.clone();
        m.extend(decls.iter().copied());
        extended = m;
        &extended
    };
    for child in node.children() {
        match child.node_type() {
            NodeType::Element => element(out, child, mine, omit),
            NodeType::Text => escape_text(out, child.text().unwrap_or("")),
            NodeType::PI => pi(out, child),
            NodeType::Comment | NodeType::Root => {}
        }
    }
    out.push_str("</");
    out.push_str(qname);
    out.push('>');
}

/// The element's qualified name as written: roxmltree keeps only (namespace, local name), the
/// prefix is read back from the source text at the element's position.
pub fn element_qname<'i>(node: Node<'_, 'i>) -> &'i str {
    let text = node.document().input_text();
    let start = node.range().start + 1;
    let rest = &text[start..];
    let end = rest
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .unwrap_or(rest.len());
    &rest[..end]
}

fn pi(out: &mut String, node: Node<'_, '_>) {
    if let Some(p) = node.pi() {
        out.push_str("<?");
        out.push_str(p.target);
        if let Some(v) = p.value
            && !v.is_empty()
        {
            out.push(' ');
            out.push_str(v);
        }
        out.push_str("?>");
    }
}

fn escape_text(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}
