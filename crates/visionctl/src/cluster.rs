//! Connecting as kubectl does (`--kubeconfig`, else `$KUBECONFIG`, else
//! in-cluster credentials, else `~/.kube/config`; `--context`; the context's
//! namespace unless `-n`), and the listing helpers the commands share.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::{Error, Result};

/// Where to connect: kubectl's global flags.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A client and the namespace commands act in.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Connection {
    /// Connects (no request is made yet).
    pub async fn connect(&self) -> Result<Session> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match (&self.kubeconfig, &self.context) {
            (Some(path), _) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| Error::Config(Box::new(e)))?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| Error::Config(Box::new(e)))?
            }
            (None, Some(_)) => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::Config(Box::new(e)))?,
            (None, None) => Config::infer()
                .await
                .map_err(|e| Error::Config(Box::new(e)))?,
        };
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config)?;
        Ok(Session { client, namespace })
    }
}

/// Creates the namespace unless it exists, and waits for its default
/// ServiceAccount (pods of a namespace are refused until it exists).
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    if api.get_opt(name).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    for _ in 0..60 {
        if sas.get_opt("default").await?.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(Error::Timeout {
        what: format!("the default ServiceAccount of namespace {name} did not appear"),
        after: Duration::from_secs(30),
    })
}

/// Lists every object, 500 at a time.
pub async fn list_all<K>(api: &Api<K>, lp: ListParams) -> Result<Vec<K>>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut lp = lp.limit(500);
    loop {
        let page = api.list(&lp).await?;
        let cont = page.metadata.continue_.clone();
        out.extend(page.items);
        match cont {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}
