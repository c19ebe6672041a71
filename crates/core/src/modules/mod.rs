//! Core modules every server has. Each file implements one XEP and starts with its citation.

pub mod contact;
pub mod disco;
pub mod extdisco;
pub mod ping;
pub mod register;
pub mod version;

use std::sync::Arc;

use crate::module::Module;
use crate::CoreConfig;

/// The core modules enabled by `config`. The registration module is passed in because the
/// client listener also needs it (registration happens before authentication).
pub fn defaults(config: &CoreConfig, register: Arc<register::Register>) -> Vec<Arc<dyn Module>> {
    let mut v: Vec<Arc<dyn Module>> = vec![Arc::new(disco::Disco), Arc::new(ping::Ping), register];
    if config.version.enabled {
        v.push(Arc::new(version::Version {
            show_os: config.version.show_os,
        }));
    }
    if config.contact.form().is_some() {
        v.push(Arc::new(contact::Contact {
            config: config.contact.clone(),
        }));
    }
    if !config.external_services.is_empty() {
        v.push(Arc::new(extdisco::ExternalServices {
            services: config.external_services.clone(),
        }));
    }
    v
}
