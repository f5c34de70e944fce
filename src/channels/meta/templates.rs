//! The template sync of a `meta` instance: reads its WhatsApp Business Account's templates
//! from the Graph API (every page) and replaces its stored catalogue with them (see
//! `crate::templates` for what the catalogue is for).

use crate::app::App;
use crate::channels::meta::graph::GraphError;
use crate::instances::Instance;
use crate::store::StoreError;
use crate::templates::Template;

/// Why a sync did not happen.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The instance is not on the `meta` channel.
    #[error("this instance is on the sandbox channel, whose templates are built in")]
    NotMeta,
    /// No WhatsApp Business Account id was given with the channel settings.
    #[error("the meta channel settings have no `waba_id`: set it with PUT /v1/instance/channel to sync templates")]
    NoWabaId,
    /// Meta did not answer with the templates.
    #[error("Meta did not list the templates: {0}")]
    Graph(#[from] GraphError),
    /// Storing them failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Syncs the instance's catalogue; answers how many templates it has now.
pub async fn sync(app: &App, instance: &Instance) -> Result<usize, SyncError> {
    let meta = instance.meta.as_ref().ok_or(SyncError::NotMeta)?;
    let waba_id = meta.waba_id.as_deref().ok_or(SyncError::NoWabaId)?;
    let listed = app.graph.list_templates(waba_id, &meta.access_token).await?;
    let templates: Vec<Template> = listed.iter().filter_map(Template::from_graph).collect();
    let count = templates.len();
    app.store.replace_templates(instance.id, templates, app.now()).await?;
    tracing::info!(instance_id = instance.id, templates = count, "message templates synced");
    Ok(count)
}
