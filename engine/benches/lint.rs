//! How long `easymo lint` (the same load-and-check path serving and reload use) takes on a
//! config far larger than easyMO's: 1,000 endpoints, 5,000 keyword routes, 1,000 flows in 20
//! files, 100 templates. Run with `cargo bench -p easymo-engine --bench lint`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use easymo_engine::config::{load_text, EnvPolicy, FileSource};

const ENDPOINTS: usize = 1_000;
const ROUTES_PER_ENDPOINT: usize = 5;
const FLOWS: usize = 500;
const FLOW_FILES: usize = 20;
const TEMPLATES: usize = 100;

/// Flow files held in memory, so the benchmark measures lint, not the disk.
struct Memory(HashMap<PathBuf, String>);

impl FileSource for Memory {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn flow_files_in(&self, _dir: &Path) -> Vec<PathBuf> {
        self.0.keys().cloned().collect()
    }
}

fn generate() -> (String, Memory) {
    let mut yaml = String::from("version: 1\nserver:\n  listen: 0.0.0.0:8080\n  trusted_proxies: [10.0.0.0/8]\n  database_url: ${DATABASE_URL}\nflows:\n");
    for f in 0..FLOW_FILES {
        let _ = writeln!(yaml, "  - flows/f{f}.flow");
    }
    yaml.push_str("endpoints:\n");
    for e in 0..ENDPOINTS {
        let _ = write!(
            yaml,
            "  - name: wa-{e}\n    path: /wa/{e}\n    kind: whatsapp\n    verify_token: ${{VERIFY}}\n    auth:\n      hmac:\n        header: X-Hub-Signature-256\n        prefix: \"sha256=\"\n        secrets:\n          - ${{SECRET}}\n    rate_limit:\n      requests: 300\n      per: 60s\n    routing:\n      global:\n        - keywords: [menu]\n          flow: flow_0\n      routes:\n"
        );
        for r in 0..ROUTES_PER_ENDPOINT {
            let flow = (e * ROUTES_PER_ENDPOINT + r) % FLOWS;
            let _ = write!(
                yaml,
                "        - keywords: [service {r} of {e}, s{r}x{e}]\n          flow: flow_{flow}\n"
            );
        }
        yaml.push_str("      fallback: flow_0\n");
    }
    yaml.push_str("templates:\n");
    for t in 0..TEMPLATES {
        let _ = write!(
            yaml,
            "  list_{t}:\n    list:\n      body: {{en: \"Choose one, {{{{ contact.name }}}}\", rw: Hitamo, fr: Choisissez}}\n      button: {{en: Options, rw: Amahitamo, fr: Options}}\n      sections:\n        - rows_from: rows\n          row:\n            id: \"{{{{ row.id }}}}\"\n            title: \"{{{{ row.name }}}}\"\n            description: \"{{{{ row.detail }}}}\"\n"
        );
    }
    let mut files = HashMap::new();
    let per_file = FLOWS / FLOW_FILES;
    for f in 0..FLOW_FILES {
        let mut text = String::new();
        for i in f * per_file..(f + 1) * per_file {
            let _ = write!(
                text,
                "flow flow_{i} {{\n  let rows = query \"select id, name, detail from items where kind = $1 and active order by name limit 30\" with \"k{i}\"\n  if rows is empty {{\n    end\n  }}\n  set last = \"{i}\"\n  reply list_{} with rows = rows\n  await choice -> pick_{i}\n}}\n\nflow pick_{i}(choice) {{\n  exec \"insert into picks (item, who) values ($1, $2)\" with choice.id, contact.wa_id\n  call flow_{}\n}}\n\n",
                i % TEMPLATES,
                (i + 1) % FLOWS
            );
        }
        files.insert(PathBuf::from(format!("flows/f{f}.flow")), text);
    }
    (yaml, Memory(files))
}

fn lint_large_config(c: &mut Criterion) {
    let (yaml, files) = generate();
    let loaded = load_text(
        "routes.yaml",
        &yaml,
        Path::new(""),
        &EnvPolicy::Unchecked,
        &files,
    );
    assert!(
        loaded.diagnostics.is_empty(),
        "the generated config must be clean: {:?}",
        &loaded.diagnostics[..loaded.diagnostics.len().min(3)]
    );
    let config = loaded.config.as_ref().expect("loads");
    assert_eq!(config.endpoints.len(), ENDPOINTS);
    assert_eq!(
        config.flows.index.len(),
        FLOWS * 2,
        "1,000 flows: a menu flow and a choice flow each"
    );
    let routes: usize = config
        .endpoints
        .iter()
        .filter_map(|e| e.router.as_ref())
        .map(|r| r.keywords.len())
        .sum();
    assert!(routes >= ENDPOINTS * ROUTES_PER_ENDPOINT);

    let mut group = c.benchmark_group("lint");
    group.sample_size(10);
    group.bench_function("1000_endpoints_5000_routes_1000_flows", |b| {
        b.iter(|| {
            load_text(
                "routes.yaml",
                &yaml,
                Path::new(""),
                &EnvPolicy::Unchecked,
                &files,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, lint_large_config);
criterion_main!(benches);
