//! `flowguard init`: a starter project that passes `check` and runs on the simulator.

use super::Failure;
use std::path::Path;

#[derive(Debug, Clone, Copy)]
pub enum Profile {
    /// Moderate simulated faults: what a new project starts from.
    Starter,
    /// Fault rates high enough that every error kind shows up in one demo batch.
    Demo,
}

const STARTER_CONFIG: &str = include_str!("../../examples/starter/flowguard.yaml");
const DEMO_CONFIG: &str = include_str!("../../examples/demo/flowguard.yaml");
const FLOW: &str = include_str!("../../examples/starter/flows/douyin_script.yaml");
const WORDS: &str = include_str!("../../examples/starter/flows/sensitive_words.txt");

/// Writes the project; refuses to overwrite a file unless `force`.
pub fn init(dir: &Path, force: bool, profile: Profile) -> Result<(), Failure> {
    let config = match profile {
        Profile::Starter => STARTER_CONFIG,
        Profile::Demo => DEMO_CONFIG,
    };
    let files = [("flowguard.yaml", config), ("flows/douyin_script.yaml", FLOW), ("flows/sensitive_words.txt", WORDS)];
    if !force {
        let existing: Vec<String> =
            files.iter().map(|(p, _)| dir.join(p)).filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
        if !existing.is_empty() && matches!(profile, Profile::Starter) {
            return Err(super::usage(format!("{} already exist(s); use --force to overwrite", existing.join(", "))));
        }
    }
    std::fs::create_dir_all(dir.join("flows")).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.join("flows").display()))?;
    for (path, text) in files {
        let target = dir.join(path);
        std::fs::write(&target, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", target.display()))?;
    }
    if matches!(profile, Profile::Starter) {
        println!("wrote a starter project in {}:", dir.display());
        for (path, _) in files {
            println!("  {}", dir.join(path).display());
        }
        println!("next: cd {} && flowguard check && flowguard run douyin_script", dir.display());
    }
    Ok(())
}
