//! JUnit XML for CI systems (GitHub Actions, GitLab, Jenkins read it): one `<testsuite>` per
//! kind of test, one `<testcase>` per file (named by the file's path, so the attributes stay
//! within the schema Jenkins publishes: no `file`), `<failure>` with what differed,
//! `<skipped>` with why. Owns: the XML. Must not decide what passed.

use std::fmt::Write as _;

use super::{Case, Outcome};

/// The report as JUnit XML.
pub fn render(cases: &[Case]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total: f64 = cases.iter().map(|c| c.seconds).sum();
    let _ = writeln!(
        out,
        "<testsuites name=\"easymo test\" tests=\"{}\" failures=\"{}\" skipped=\"{}\" time=\"{total:.3}\">",
        cases.len(),
        count(cases, |o| matches!(o, Outcome::Failed(_))),
        count(cases, |o| matches!(o, Outcome::Skipped(_))),
    );
    let mut suites: Vec<&str> = cases.iter().map(|c| c.suite).collect();
    suites.dedup();
    for suite in suites {
        let members: Vec<&Case> = cases.iter().filter(|c| c.suite == suite).collect();
        let time: f64 = members.iter().map(|c| c.seconds).sum();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{suite}\" tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{time:.3}\">",
            members.len(),
            members.iter().filter(|c| matches!(c.outcome, Outcome::Failed(_))).count(),
            members.iter().filter(|c| matches!(c.outcome, Outcome::Skipped(_))).count(),
        );
        for case in members {
            let _ = write!(
                out,
                "    <testcase classname=\"{suite}\" name=\"{}\" time=\"{:.3}\"",
                escape(&case.file.display().to_string()),
                case.seconds
            );
            match &case.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Failed(why) => {
                    let first = why.lines().next().unwrap_or_default();
                    let _ = write!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                        escape(first),
                        escape(why)
                    );
                }
                Outcome::Skipped(why) => {
                    let _ = write!(
                        out,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        escape(why)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

fn count(cases: &[Case], which: impl Fn(&Outcome) -> bool) -> usize {
    cases.iter().filter(|c| which(&c.outcome)).count()
}

/// Text safe in XML attributes and content.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn cases_become_testcases_with_failures_and_skips_escaped() {
        let cases = vec![
            Case {
                suite: "conversations",
                name: "01_jobs".into(),
                file: PathBuf::from("tests/conversations/01_jobs.yaml"),
                outcome: Outcome::Passed,
                seconds: 0.5,
            },
            Case {
                suite: "conversations",
                name: "02_shop".into(),
                file: PathBuf::from("b<shop>.yaml"),
                outcome: Outcome::Failed("message 1: \"a\" & more\n- x\n+ y".into()),
                seconds: 0.25,
            },
            Case {
                suite: "alerts",
                name: "latency".into(),
                file: PathBuf::from("c.yml"),
                outcome: Outcome::Skipped("no rules".into()),
                seconds: 0.0,
            },
        ];
        let xml = render(&cases);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"easymo test\" tests=\"3\" failures=\"1\" skipped=\"1\" time=\"0.750\">"), "{xml}");
        assert!(xml.contains("<testsuite name=\"conversations\" tests=\"2\" failures=\"1\" errors=\"0\" skipped=\"0\" time=\"0.750\">"), "{xml}");
        assert!(
            xml.contains("name=\"tests/conversations/01_jobs.yaml\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"b&lt;shop&gt;.yaml\""), "{xml}");
        assert!(
            xml.contains("<failure message=\"message 1: &quot;a&quot; &amp; more\">"),
            "{xml}"
        );
        assert!(xml.contains("<skipped message=\"no rules\"/>"), "{xml}");
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert_eq!(xml.matches("</testsuite>").count(), 2);
    }
}
