//! The command line: global connection and output flags, and one subcommand per task.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// tablecrypt: which key is every DynamoDB table in the fleet encrypted with, and change it safely in bulk.
///
/// Exit codes: 0 done; 1 the operation failed or some tables failed; 2 bad usage or input the server refused as
/// invalid; 3 the server could not be reached, or refused the credentials or the caller's permissions; 4 AWS
/// refused tablecrypt's member role (a missing permission, a trust policy or external id that does not match);
/// 130 interrupted (a watched change request keeps running).
#[derive(Debug, Parser)]
#[command(
    name = "tablecrypt",
    version,
    disable_version_flag = true,
    arg_required_else_help = true,
    max_term_width = 110
)]
pub struct Cli {
    /// Print this CLI's version and the server's (asked at --server; no credentials needed).
    #[arg(short = 'V', long)]
    pub version: bool,
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// How to reach and authenticate to the server, and how to print answers.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output (any command)")]
pub struct GlobalArgs {
    /// The server's gRPC address: a URL (https:// or any TLS flag turns on TLS), or HOST:PORT as grpcurl takes it
    /// (plain HTTP for this machine, TLS for any other host).
    #[arg(
        long,
        env = "TABLECRYPT_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Bearer token (a static token or a JWT), sent as `authorization: Bearer …`.
    #[arg(long, env = "TABLECRYPT_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the CA that signed the server's certificate (default: the system's roots).
    #[arg(long, env = "TABLECRYPT_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with --key).
    #[arg(long, env = "TABLECRYPT_CLIENT_CERT", requires = "key", global = true)]
    pub cert: Option<PathBuf>,
    /// PEM private key of the client certificate (with --cert).
    #[arg(long, env = "TABLECRYPT_CLIENT_KEY", requires = "cert", global = true)]
    pub key: Option<PathBuf>,
    /// The name to expect in the server's certificate, when it differs from the address's host.
    #[arg(long, env = "TABLECRYPT_TLS_DOMAIN", global = true)]
    pub tls_domain: Option<String>,
    /// Development servers only (--insecure without authentication): the caller name to act as.
    #[arg(long, env = "TABLECRYPT_CALLER", global = true)]
    pub caller: Option<String>,
    /// Output format: human-readable tables (keys by alias, or a short key id), wide tables (keys by alias and
    /// full ARN), or JSON (proto3 JSON mapping, one document) for scripts.
    #[arg(long, short = 'o', value_enum, env = "TABLECRYPT_OUTPUT", default_value_t = Format::Table, global = true)]
    pub output: Format,
    /// Deadline of each call (not of a watch).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Wide,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Member accounts: register, list, verify, import.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// The table inventory: what encryption every table had when last seen.
    #[command(subcommand)]
    Tables(TablesCommand),
    /// Scan accounts for their tables and encryption.
    #[command(subcommand)]
    Inventory(InventoryCommand),
    /// KMS keys: which tables use them.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Plan, confirm, create and watch a batch key migration.
    #[command(after_help = "Examples:\n  \
        tablecrypt migrate --selector team=payments --from-key alias/payments-a --to-key alias/payments-b --dry-run\n  \
        tablecrypt migrate --account 111111111111 --region eu-west-1 --to-mode aws-managed --yes\n  \
        tablecrypt migrate --selector team=payments --to-key alias/payments-b --tag app=checkout --include-iac-owned")]
    Migrate(MigrateArgs),
    /// Change requests: list, inspect, approve, pause, resume, cancel, roll back, watch.
    #[command(subcommand)]
    Requests(RequestsCommand),
    /// The key rotation history: every table change tablecrypt made.
    #[command(after_help = "Examples:\n  \
        tablecrypt history --request 6f1c1f3e-8f1e-4a55-9a55-0123456789ab\n  \
        tablecrypt history --account 111111111111 --since 7days -o wide")]
    History(HistoryArgs),
    /// The audit log (admins only).
    #[command(after_help = "Examples:\n  \
        tablecrypt audit --outcome PERMISSION_DENIED\n  \
        tablecrypt audit --method DiscoverAccounts --limit 20")]
    Audit(AuditArgs),
    /// Print a shell completion script: `source <(tablecrypt completion bash)`, or save it where your shell
    /// loads completions (zsh: a file `_tablecrypt` on $fpath; fish: ~/.config/fish/completions/tablecrypt.fish).
    #[command(after_help = "Examples:\n  \
        tablecrypt completion bash\n  \
        tablecrypt completion zsh")]
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Register one member account.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts register --account-id 111111111111 --role-arn arn:aws:iam::111111111111:role/tablecrypt-member --region eu-west-1 --label team=payments")]
    Register(RegisterArgs),
    /// List registered accounts.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts list --selector team=payments,env!=dev\n  \
        tablecrypt accounts list --selector org.tablecrypt/team=payments --limit 20")]
    List {
        /// Only accounts whose labels match, e.g. `team=payments,env!=dev`.
        #[arg(long, short = 'l')]
        selector: Option<String>,
        /// At most this many accounts.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one account.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts get 111111111111")]
    Get { account_id: String },
    /// Check that an account's role can be assumed and its tables listed, region by region; or every account a
    /// selector matches (--all: every account), with one summary row each.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts verify 111111111111             # one row per region\n  \
        tablecrypt accounts verify --selector org.tablecrypt/team=payments\n  \
        tablecrypt accounts verify --all                    # exit 4 if AWS denied any member role")]
    Verify {
        #[arg(required_unless_present_any = ["selector", "all"], conflicts_with_all = ["selector", "all"])]
        account_id: Option<String>,
        /// Every account whose labels match, e.g. `team=payments`.
        #[arg(long, short = 'l', conflicts_with = "all")]
        selector: Option<String>,
        /// Every registered account you may see.
        #[arg(long)]
        all: bool,
    },
    /// Register (or bring up to date) every account in a YAML file; the whole file is checked first.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts import fleet.yaml --dry-run\n  \
        tablecrypt accounts import fleet.yaml --check\n  \
        tablecrypt accounts import fleet.yaml")]
    Import {
        /// YAML: `accounts: [{account_id, role_arn, regions, display_name?, labels?, external_id?, limits?}]`.
        file: PathBuf,
        /// Check the file and show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Like --dry-run, and exit 1 if any account differs from the file: a drift check for CI (external ids
        /// are compared only for a caller with the admin role; others see them "not compared").
        #[arg(long)]
        check: bool,
    },
    /// Remove an account from the registry.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts deregister 111111111111")]
    Deregister { account_id: String },
    /// Register the accounts of the AWS Organization (the server's [discovery] settings): new ones registered,
    /// moved or retagged ones relabelled under org.tablecrypt/, and with --prune the ones that left deregistered.
    #[command(after_help = "Examples:\n  \
        tablecrypt accounts discover --dry-run      # what would change; writes nothing\n  \
        tablecrypt accounts discover                # register and relabel\n  \
        tablecrypt accounts discover --prune        # also deregister suspended and departed accounts")]
    Discover {
        /// Show what would change, without changing anything.
        #[arg(long)]
        dry_run: bool,
        /// Also deregister accounts discovery registered that were suspended, closed or left the organization
        /// (never one with change requests in flight, nor one registered by hand).
        #[arg(long)]
        prune: bool,
    },
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// 12-digit AWS account id.
    #[arg(long)]
    pub account_id: String,
    /// The member role tablecrypt assumes, e.g. arn:aws:iam::111111111111:role/tablecrypt-member.
    #[arg(long)]
    pub role_arn: String,
    /// A region the account's tables live in (repeat for more).
    #[arg(long = "region", required = true)]
    pub regions: Vec<String>,
    /// A label `key=value` (repeat for more).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
    #[arg(long, default_value = "")]
    pub display_name: String,
    /// The external id the member role's trust policy demands.
    #[arg(long, env = "TABLECRYPT_EXTERNAL_ID", hide_env_values = true)]
    pub external_id: Option<String>,
}

/// Filters shared by `tables list` (the inventory's own filters).
#[derive(Debug, Args)]
pub struct TableFilters {
    /// Only this account (repeat for more).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Only accounts whose labels match.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Only this region (repeat for more).
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Only tables in this encryption mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Only tables on this KMS key (ARN).
    #[arg(long)]
    pub kms_key: Option<String>,
    /// Only tables whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only tables whose tags match, e.g. `app=checkout,!ManagedBy`.
    #[arg(long)]
    pub tag: Option<String>,
    /// At most this many tables.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only tables whose key is inaccessible.
    #[arg(long)]
    pub inaccessible: bool,
    /// Include tables that have since been deleted.
    #[arg(long)]
    pub include_gone: bool,
}

#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// List the inventory.
    #[command(after_help = "Examples:\n  \
        tablecrypt tables list --selector team=payments --mode customer-managed\n  \
        tablecrypt tables list --kms-key arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111 -o wide\n  \
        tablecrypt tables list --inaccessible")]
    List {
        #[command(flatten)]
        filters: TableFilters,
    },
    /// Describe one table live in AWS (and record it in the inventory).
    #[command(after_help = "Examples:\n  \
        tablecrypt tables get 111111111111 eu-west-1 orders")]
    Get {
        account_id: String,
        region: String,
        table_name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// Scan accounts (all visible accounts by default) and wait for the scan, with a progress bar.
    #[command(after_help = "Examples:\n  \
        tablecrypt inventory refresh\n  \
        tablecrypt inventory refresh --account 111111111111 --region eu-west-1 -v")]
    Refresh {
        /// Only this account (repeat for more).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Only this region (repeat for more).
        #[arg(long = "region")]
        regions: Vec<String>,
        /// Start the scan and return at once.
        #[arg(long)]
        no_wait: bool,
        /// A row for every account-region, not only those that failed or are unfinished.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
    /// Show a scan's progress and the account-regions that failed or are unfinished (-v: every one).
    #[command(after_help = "Examples:\n  \
        tablecrypt inventory scan 6f1c1f3e-8f1e-4a55-9a55-0123456789ab -v")]
    Scan {
        scan_id: String,
        /// A row for every account-region.
        #[arg(long, short = 'v')]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The tables (and replicas) encrypted with a key, so you know whether it can be retired.
    #[command(after_help = "Examples:\n  \
        tablecrypt keys usage alias/payments-a --account 111111111111 --region eu-west-1\n  \
        tablecrypt keys usage arn:aws:kms:eu-west-1:111111111111:key/aaaaaaaa-1111-4111-8111-111111111111")]
    Usage {
        /// A key ARN, or a key id or alias (with --account and --region).
        #[arg(value_name = "KEY")]
        kms_key: String,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
}

/// The keys AWS holds: the targets that need no key of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AwsKey {
    AwsOwned,
    AwsManaged,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    AwsOwned,
    AwsManaged,
    CustomerManaged,
}

/// What a migration targets and how fast it may go.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Move tables to this customer managed KMS key (ARN, or alias/… or key id resolved per table's account).
    #[arg(long, conflicts_with = "to_mode")]
    pub to_key: Option<String>,
    /// Move tables to an AWS owned or AWS managed key instead of a customer key.
    #[arg(long, value_enum)]
    pub to_mode: Option<AwsKey>,
    /// Only tables currently on this key: an ARN, or an alias name (alias/payments-a) or key id resolved in
    /// every account-region covered, so one command moves the whole fleet. Repeat, or separate with commas, for
    /// tables on any of several keys.
    #[arg(long, value_delimiter = ',')]
    pub from_key: Vec<String>,
    /// Only tables currently in this mode.
    #[arg(long, value_enum)]
    pub from_mode: Option<Mode>,
    /// Only accounts whose labels match, e.g. `team=payments`.
    #[arg(long, short = 'l')]
    pub selector: Option<String>,
    /// Only this account (repeat for more).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// Only this region (repeat for more).
    #[arg(long = "region")]
    pub regions: Vec<String>,
    /// Only tables whose name starts with this.
    #[arg(long)]
    pub prefix: Option<String>,
    /// Only tables whose tags match, e.g. `app=checkout,!ManagedBy` (tags as the last inventory scan read them).
    #[arg(long)]
    pub tag: Option<String>,
    /// Also change tables owned by infrastructure as code (a CloudFormation stack, or a tag in the server's
    /// iac_owner_tags): only when their templates ignore encryption changes, or already declare the target.
    #[arg(long)]
    pub include_iac_owned: bool,
    /// Why: kept on the request and in its history.
    #[arg(long, short = 'd', default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub pace: PaceArgs,
    #[command(flatten)]
    pub flow: FlowArgs,
}

/// Limits a request may lower below the service's.
#[derive(Debug, Args)]
pub struct PaceArgs {
    /// UpdateTable calls per second per account-region (at most the service's limit).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Tables changing at once per account-region.
    #[arg(long)]
    pub max_in_flight: Option<i32>,
    /// Pause the request after this many failed tables.
    #[arg(long)]
    pub failure_threshold: Option<i32>,
    /// Change this many tables first and pause if any fails.
    #[arg(long)]
    pub canary: Option<i32>,
}

/// Plan, confirm, create, watch.
#[derive(Debug, Args)]
pub struct FlowArgs {
    /// Show the plan and stop; nothing is created.
    #[arg(long)]
    pub dry_run: bool,
    /// Create the request without asking (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Create the request and return without watching it.
    #[arg(long)]
    pub no_watch: bool,
    /// Idempotency key: running again with the same id returns the same request (default: a new UUID).
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List change requests, newest first.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests list --state running --state paused\n  \
        tablecrypt requests list --state pending-approval")]
    List {
        /// Only requests in this state (repeat for more), e.g. running, pending-approval.
        #[arg(long = "state", value_enum)]
        states: Vec<RequestState>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show a request with its counts (and items with --items), e.g. `requests get ID --items --state failed`.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests get 6f1c1f3e-8f1e-4a55-9a55-0123456789ab\n  \
        tablecrypt requests get 6f1c1f3e-8f1e-4a55-9a55-0123456789ab --items --state failed --limit 20")]
    Get {
        change_request_id: String,
        /// Also list its items.
        #[arg(long)]
        items: bool,
        /// With --items: only items in this state (repeat for more).
        #[arg(long = "state", value_enum, requires = "items")]
        states: Vec<ItemState>,
        /// With --items: at most this many items.
        #[arg(long, requires = "items")]
        limit: Option<usize>,
    },
    /// Let a request that waits for approval run (not by its creator).
    #[command(after_help = "Examples:\n  \
        tablecrypt requests approve 6f1c1f3e-8f1e-4a55-9a55-0123456789ab")]
    Approve { change_request_id: String },
    /// Stop new applies; tables already sent to AWS finish and are recorded.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests cancel 6f1c1f3e-8f1e-4a55-9a55-0123456789ab")]
    Cancel { change_request_id: String },
    /// Stop new applies until resumed.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests pause 6f1c1f3e-8f1e-4a55-9a55-0123456789ab --reason \"latency alarm on orders\"")]
    Pause {
        change_request_id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let a paused request run again.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests resume 6f1c1f3e-8f1e-4a55-9a55-0123456789ab")]
    Resume { change_request_id: String },
    /// Plan and create a request that returns every table the given request changed to its previous key.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests rollback 6f1c1f3e-8f1e-4a55-9a55-0123456789ab --dry-run\n  \
        tablecrypt requests rollback 6f1c1f3e-8f1e-4a55-9a55-0123456789ab --yes -d \"undo the payments migration\"")]
    Rollback {
        change_request_id: String,
        #[arg(long, short = 'd', default_value = "")]
        description: String,
        #[command(flatten)]
        flow: FlowArgs,
    },
    /// Follow a request with progress bars until it ends; Ctrl-C detaches.
    #[command(after_help = "Examples:\n  \
        tablecrypt requests watch 6f1c1f3e-8f1e-4a55-9a55-0123456789ab")]
    Watch { change_request_id: String },
}

/// A change item's state, as a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ItemState {
    Pending,
    Applying,
    Waiting,
    Deferred,
    Succeeded,
    Failed,
    Skipped,
    Blocked,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RequestState {
    PendingApproval,
    Queued,
    Running,
    Paused,
    Cancelling,
    Succeeded,
    PartiallyFailed,
    Failed,
    Cancelled,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(long)]
    pub account: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub table: Option<String>,
    /// Changes from or to this KMS key (ARN).
    #[arg(long)]
    pub kms_key: Option<String>,
    /// Changes made by this change request.
    #[arg(long = "request")]
    pub change_request: Option<String>,
    /// Only changes started in the last DURATION, e.g. 24h or 7days.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[arg(long)]
    pub caller: Option<String>,
    /// The method: its name (CreateChangeRequest) or its full path (/tablecrypt.v1.TableEncryption/CreateChangeRequest).
    #[arg(long)]
    pub method: Option<String>,
    /// A gRPC code name, e.g. OK or PERMISSION_DENIED.
    #[arg(long)]
    pub outcome: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// Splits an example the way a shell would (words, and double-quoted words).
    fn words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word = String::new();
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ' ' if !quoted => {
                    if !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                }
                c => word.push(c),
            }
        }
        if !word.is_empty() {
            words.push(word);
        }
        words
    }

    #[test]
    fn every_command_has_examples_that_parse() {
        fn leaves(command: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
            let subcommands: Vec<&clap::Command> = command
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .collect();
            if subcommands.is_empty() {
                out.push((path.clone(), command.clone()));
            }
            for sub in subcommands {
                leaves(sub, format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut all = Vec::new();
        leaves(&Cli::command(), "tablecrypt".to_owned(), &mut all);
        assert!(all.len() > 20, "{}", all.len());
        for (path, command) in all {
            let help = command
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            let examples: Vec<&str> = help
                .lines()
                .map(|l| l.split(" #").next().unwrap_or_default().trim())
                .filter(|l| l.starts_with("tablecrypt "))
                .collect();
            assert!(
                help.starts_with("Examples:") && !examples.is_empty(),
                "`{path} --help` has no examples"
            );
            for example in examples {
                assert!(example.starts_with(&path), "{path}: {example}");
                if let Err(e) = Cli::try_parse_from(words(example)) {
                    panic!("{path}: the example `{example}` does not parse: {e}");
                }
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Global flags are shared with every subcommand: a subcommand flag of the same name breaks parsing at run
    /// time, which `debug_assert` does not see.
    #[test]
    fn every_subcommand_parses_with_the_global_flags() {
        for line in [
            "tablecrypt --key k.pem --cert c.pem tables list --kms-key arn",
            "tablecrypt --key k.pem --cert c.pem history --kms-key arn --request r",
            "tablecrypt -o json migrate --to-key alias/b --account 111111111111 --yes",
            "tablecrypt requests rollback r --yes --dry-run",
            "tablecrypt accounts import f.yaml --dry-run",
            "tablecrypt --key k.pem --cert c.pem keys usage alias/a --account 111111111111",
            "tablecrypt --key k.pem --cert c.pem accounts verify 111111111111",
            "tablecrypt --key k.pem --cert c.pem inventory refresh --region eu-west-1",
            "tablecrypt --key k.pem --cert c.pem requests pause r --reason x",
            "tablecrypt --key k.pem --cert c.pem audit --outcome OK",
            "tablecrypt --key k.pem --cert c.pem tables get 111111111111 eu-west-1 t",
        ] {
            let cli = Cli::try_parse_from(line.split(' ')).expect(line);
            assert_eq!(cli.global.key.is_some(), line.contains("--key"), "{line}");
        }
    }

    /// The server ignores exactly the CLI's variables (`tablecrypt_proto::CLI_ENVIRONMENT_KEYS`), so a user can
    /// export them in the shell a local server starts from: a new `env` here must be listed there.
    #[test]
    fn every_environment_variable_is_one_the_server_ignores() {
        fn walk(command: &clap::Command, found: &mut Vec<String>) {
            for arg in command.get_arguments() {
                if let Some(env) = arg.get_env() {
                    found.push(env.to_string_lossy().into_owned());
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, found);
            }
        }
        let mut found = Vec::new();
        walk(&Cli::command(), &mut found);
        assert!(found.len() >= 9, "{found:?}");
        for env in found {
            let key = env
                .strip_prefix("TABLECRYPT_")
                .unwrap_or_else(|| panic!("{env} lacks the TABLECRYPT_ prefix"))
                .to_ascii_lowercase();
            assert!(
                tablecrypt_proto::CLI_ENVIRONMENT_KEYS.contains(&key.as_str()),
                "{env} is not in tablecrypt_proto::CLI_ENVIRONMENT_KEYS"
            );
        }
    }

    #[test]
    fn labels_need_an_equals_sign() {
        assert_eq!(parse_label("team=a"), Ok(("team".into(), "a".into())));
        assert!(parse_label("team").is_err());
    }
}
