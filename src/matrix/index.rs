//! Where each value of a YAML file starts, by dotted path.
//!
//! Typed loading tells us *that* a value is wrong; the rules of `validate`
//! need to tell the operator *where* it is. This index maps `a.b.0.c` to
//! the line and column of the key (or sequence item) that holds the value.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

#[derive(Debug, Default, Clone)]
pub struct PathIndex {
    positions: HashMap<String, Position>,
}

enum Frame {
    /// Inside a mapping; `key` is the pending key once read.
    Mapping {
        key: Option<String>,
    },
    Sequence {
        next: usize,
    },
}

impl PathIndex {
    /// Builds the index. A file that does not parse yields what was read
    /// before the error; the typed loader reports the error itself.
    pub fn build(text: &str) -> Self {
        let mut index = PathIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut path: Vec<String> = Vec::new();

        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let here = Position {
                line: span.start.line() as u64,
                column: span.start.col() as u64 + 1,
            };
            match event {
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Mapping { key }) = stack.last_mut()
                        && key.is_none()
                    {
                        *key = Some(value.to_string());
                        path.push(value.to_string());
                        index.record(&path, here);
                        continue;
                    }
                    index.enter_value(&mut stack, &mut path, here);
                    index.leave_value(&mut stack, &mut path);
                }
                Event::Alias(_) => {
                    index.enter_value(&mut stack, &mut path, here);
                    index.leave_value(&mut stack, &mut path);
                }
                Event::MappingStart(..) => {
                    index.enter_value(&mut stack, &mut path, here);
                    stack.push(Frame::Mapping { key: None });
                }
                Event::SequenceStart(..) => {
                    index.enter_value(&mut stack, &mut path, here);
                    stack.push(Frame::Sequence { next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                    index.leave_value(&mut stack, &mut path);
                }
                _ => {}
            }
        }
        index
    }

    /// A value begins: inside a sequence it gets the next index segment.
    fn enter_value(&mut self, stack: &mut [Frame], path: &mut Vec<String>, here: Position) {
        if let Some(Frame::Sequence { next }) = stack.last_mut() {
            path.push(next.to_string());
            *next += 1;
            self.record(path, here);
        }
    }

    /// A value ends: drop its segment and, in a mapping, await a new key.
    fn leave_value(&mut self, stack: &mut [Frame], path: &mut Vec<String>) {
        let ends_item = match stack.last_mut() {
            Some(Frame::Mapping { key }) => key.take().is_some(),
            Some(Frame::Sequence { .. }) => true,
            None => false,
        };
        if ends_item {
            path.pop();
        }
    }

    fn record(&mut self, path: &[String], here: Position) {
        self.positions.entry(path.join(".")).or_insert(here);
    }

    pub fn get(&self, path: &str) -> Option<Position> {
        self.positions.get(path).copied()
    }

    /// The path of the last key that starts before `at`.
    pub fn last_key_before(&self, at: Position) -> Option<String> {
        self.positions
            .iter()
            .filter(|(_, p)| (p.line, p.column) < (at.line, at.column))
            .max_by_key(|(path, p)| (p.line, p.column, path.len()))
            .map(|(path, _)| path.clone())
    }

    /// The position of `path`, or of its nearest ancestor that exists.
    pub fn nearest(&self, path: &str) -> Option<Position> {
        let mut candidate = path;
        loop {
            if let Some(found) = self.get(candidate) {
                return Some(found);
            }
            candidate = &candidate[..candidate.rfind('.')?];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
top: 1
services:
  auth:
    ports: { http: 8080, internal: 9090 }
    egress:
      - auth-db
      - redis
list:
  - name: a
    value: 1
  - name: b
";

    #[test]
    fn finds_nested_keys_with_one_based_positions() {
        let index = PathIndex::build(SAMPLE);
        assert_eq!(index.get("top"), Some(Position { line: 1, column: 1 }));
        assert_eq!(
            index.get("services.auth"),
            Some(Position { line: 3, column: 3 })
        );
        assert_eq!(index.get("services.auth.ports.internal").unwrap().line, 4);
    }

    #[test]
    fn numbers_sequence_items() {
        let index = PathIndex::build(SAMPLE);
        assert_eq!(index.get("services.auth.egress.1").unwrap().line, 7);
        assert_eq!(index.get("list.1.name").unwrap().line, 11);
        assert_eq!(index.get("list.0.value").unwrap().line, 10);
    }

    #[test]
    fn nearest_falls_back_to_an_existing_ancestor() {
        let index = PathIndex::build(SAMPLE);
        assert_eq!(index.nearest("services.auth.replicas").unwrap().line, 3);
        assert_eq!(index.nearest("nothing.here"), None);
    }
}
