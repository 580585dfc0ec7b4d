//! Watches routes.yaml and the flow files and says "reload" when they settle.
//!
//! Owns: the notify watcher and the debounce. It watches the files' directories, not the files,
//! because editors save by writing a new file and renaming it over the old one, and Kubernetes
//! updates a ConfigMap volume by swapping its `..data` link (every file changes at once, and no
//! event names them). It only signals; `reload` decides whether the new files are good.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the files must stay quiet before a reload: editors and `git checkout` write in
/// several steps, and one reload should see all of them.
pub const SETTLE: Duration = Duration::from_millis(150);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

/// Watches `files` and sends `()` on `reload` after each burst of changes to any of them.
pub fn spawn(files: &[PathBuf], reload: mpsc::Sender<()>) -> notify::Result<Watcher> {
    let wanted: BTreeSet<PathBuf> = files.iter().map(|f| absolute(f)).collect();
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let filter = wanted.clone();
    let mut inner = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| filter.contains(&absolute(p)) || is_volume_swap(p))
        {
            let _ = raw_tx.send(());
        }
    })?;
    let dirs: BTreeSet<PathBuf> = wanted
        .iter()
        .filter_map(|f| f.parent().map(Path::to_owned))
        .collect();
    for dir in &dirs {
        inner.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Wait until nothing has changed for SETTLE, then signal once.
            loop {
                match tokio::time::timeout(SETTLE, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if reload.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(Watcher { _inner: inner })
}

/// Kubernetes' atomic writer publishes a new version of a ConfigMap or Secret volume by
/// renaming a fresh link over `..data`, which every file in the volume points through.
fn is_volume_swap(path: &Path) -> bool {
    path.file_name().is_some_and(|name| name == "..data")
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}
