//! The policy-file check shared by the YAML and JSON targets.

use std::path::Path;

use ricochet::config_file::PolicyFile;

/// Parses `data` (made text, invalid UTF-8 replaced) as the policy file `file_name`, whose
/// extension picks YAML or JSON. It must never panic, and whatever it answers must be coherent:
/// every policy it loads validates, and a refusal carries at least one error, each naming the
/// file, a message and, when located, a line from 1.
pub fn check(file_name: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new(file_name);
    match PolicyFile::parse(path, &text) {
        Ok(file) => {
            for (name, config) in file.policies() {
                if let Err(e) = config.validate() {
                    panic!("policy `{name}` was loaded but does not validate ({e}): {config:?}");
                }
                assert_eq!(file.get(name), Some(*config), "policy `{name}`");
            }
        }
        Err(errors) => {
            assert!(!errors.0.is_empty(), "refused without an error");
            for e in &errors.0 {
                assert_eq!(e.path, path, "{e}");
                assert!(!e.message.is_empty(), "{e:?}");
                if let Some((line, _)) = e.location {
                    assert!(line >= 1, "line 0: {e}");
                }
            }
            let _ = errors.to_string();
        }
    }
}
