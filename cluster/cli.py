"""The `vendo` command line: up, down, status, push, run, predictions, accounts."""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import sys
from pathlib import Path
from typing import Any, Optional

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from cluster import up as up_mod
from cluster.client import ApiError, Client, ClusterNotFound
from vendo_core.billing import usd
from vendo_core.errors import VendoError
from vendo_core.packaging import pack_project
from vendo_core.registry import token_digest, token_id
from vendo_core.settings import Settings

app = typer.Typer(help="vendo: run open models on your own GPUs, the Replicate way.", no_args_is_help=True)
predictions_app = typer.Typer(help="List, inspect and cancel predictions.", no_args_is_help=True)
accounts_app = typer.Typer(help="Accounts: users and organizations (admins only).", no_args_is_help=True)
orgs_app = typer.Typer(help="Organization members (admins only).", no_args_is_help=True)
app.add_typer(predictions_app, name="predictions")
tokens_app = typer.Typer(help="API tokens: create, list, revoke (admins only).", no_args_is_help=True)
webhooks_app = typer.Typer(help="Your webhook signing secret.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
app.add_typer(orgs_app, name="orgs")
app.add_typer(tokens_app, name="tokens")
app.add_typer(webhooks_app, name="webhooks")
batches_app = typer.Typer(help="Batch jobs (python -m cluster.batch) and their progress.", no_args_is_help=True)
app.add_typer(batches_app, name="batches")
out = Console()
err = Console(stderr=True)

TQDM = re.compile(r"(\d+)%\|.*\| (\d+)/(\d+)")


def _client():
    try:
        return Client.from_env()
    except ClusterNotFound as e:
        err.print(f"[red]{e}[/red]")
        raise typer.Exit(2) from None


def _fail(e: Exception) -> None:
    err.print(f"[red]error:[/red] {e}")
    raise typer.Exit(1)


@app.command()
def up(host: str = typer.Option(None, help="interface the API listens on"),
       port: int = typer.Option(None, help="API port"),
       address: Optional[str] = typer.Option(None, help="join this Ray cluster instead of starting one"),
       detach: bool = typer.Option(False, help="return once the API answers and leave it running"),
       dashboard: Optional[bool] = typer.Option(None, "--dashboard/--no-dashboard",
                                                help="Ray's dashboard and Jobs API (default: on)"),
       dashboard_port: Optional[int] = typer.Option(None, help="Ray's dashboard port (default 8265)")):
    """Start Ray (or join a cluster), Serve and the router."""

    overrides = {k: v for k, v in (("host", host), ("port", port), ("dashboard", dashboard),
                                   ("dashboard_port", dashboard_port)) if v is not None}
    settings = Settings(**overrides)
    if detach:
        try:
            url, token = up_mod.run_detached(settings, address)
        except RuntimeError as e:
            _fail(e)
        out.print(f"vendo is up at [bold]{url}[/bold]")
        out.print(f"API token: [bold]{token}[/bold]")
        out.print(f"export REPLICATE_BASE_URL={url} REPLICATE_API_TOKEN={token}")
        return
    up_mod.run_foreground(settings, address)


@app.command()
def down():
    """Stop the cluster started by `vendo up` for this data directory."""

    if up_mod.stop(Settings()):
        out.print("vendo stopped")
    else:
        out.print("nothing to stop")


@app.command()
def status():
    """Versions with their state, and where state and files live."""
    c = _client()
    try:
        st = c.json("GET", "/v1/status")
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    # queued: predictions waiting to start; run: processing; cold/1h: replicas started in the last hour
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("model", "version", "hardware"):
        table.add_column(name, no_wrap=True)
    table.add_column("state", min_width=12)
    for name in ("queued", "run", "cold/1h"):
        table.add_column(name, justify="right", no_wrap=True)
    partial: dict[str, list[str]] = {}
    for row in st["versions"]:
        state = row["state"] + (f" ({row['setup_error']})" if row.get("setup_error") else "")
        mark = "*" if row.get("isolation") == "partial" else ""
        table.add_row(row["model"], row["version"][:8] + mark, row.get("hardware") or "", state,
                      str(row.get("queued", 0)), str(row.get("running", 0)), str(row.get("cold_starts_last_hour", 0)))
        if mark:
            partial.setdefault(row.get("isolation_reason") or "", []).append(row["version"][:8])
    out.print(table)
    for reason, versions in sorted(partial.items()):
        out.print(f"[yellow]* model isolation is partial[/] ({len(versions)}): {reason}")
    where = f"state: {st['redis']}   files: {st['storage']}   " if st.get("redis") else ""
    out.print(f"API: {c.base_url}   {where}Serve apps: {st['serve_apps']}")
    if st.get("dashboard"):
        out.print(f"Ray dashboard: {st['dashboard']}   (jobs: ray job submit --address {st['dashboard']})")


@app.command()
def push(directory: Path = typer.Argument(..., exists=True, file_okay=False, help="a Cog project"),
         model: str = typer.Argument(..., help="owner/name"),
         hardware: Optional[str] = typer.Option(None, help="hardware SKU (see configs/hardware.yaml)"),
         visibility: str = typer.Option("private", help="public or private"),
         max_replicas: Optional[int] = typer.Option(None, help="autoscaling ceiling for this version"),
         downscale_delay_s: Optional[float] = typer.Option(None, help="idle seconds before scaling down"),
         upscale_delay_s: Optional[float] = typer.Option(None, help="busy seconds before scaling up")):
    """Package a Cog project and push it as a new version; prints the version id."""
    if not re.match(r"^[^/:]+/[^/:]+$", model):
        _fail(ValueError(f"expected owner/name, got {model!r}"))
    try:
        data, _ = pack_project(directory)
    except VendoError as e:
        _fail(e)
    params: dict[str, Any] = {"visibility": visibility}
    if hardware:
        params["hardware"] = hardware
    for key, value in (("max_replicas", max_replicas), ("downscale_delay_s", downscale_delay_s),
                       ("upscale_delay_s", upscale_delay_s)):
        if value is not None:
            params[key] = value
    c = _client()
    try:
        v = c.json("POST", f"/v1/models/{model}/versions", content=data, params=params,
                   headers={"Content-Type": "application/gzip"}, timeout=300)
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    out.print(v["id"])


def _coerce(key: str, value: str, schema: dict) -> Any:
    props = schema.get("components", {}).get("schemas", {}).get("Input", {}).get("properties", {})
    prop = props.get(key, {})
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise typer.BadParameter(f"{key}: no such file {path}")
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"
    if prop.get("type") in ("integer", "number", "boolean", "array", "object"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


@app.command()
def run(ref: str = typer.Argument(..., help="owner/name or owner/name:version"),
        inputs: list[str] = typer.Option([], "-i", "--input", help="key=value; key=@file for files"),
        output_dir: Optional[Path] = typer.Option(None, "-o", "--output-dir", help="download file outputs here")):
    """Run a prediction, showing logs and progress, and print its output."""
    m = re.match(r"^(?P<owner>[^/]+)/(?P<name>[^/:]+)(:(?P<version>.+))?$", ref)
    if not m:
        _fail(ValueError(f"expected owner/name[:version], got {ref!r}"))
    c = _client()
    try:
        model = c.json("GET", f"/v1/models/{m['owner']}/{m['name']}")
        vid = m["version"] or (model.get("latest_version") or {}).get("id")
        if not vid:
            _fail(ValueError(f"{ref} has no versions"))
        version = c.json("GET", f"/v1/models/{m['owner']}/{m['name']}/versions/{vid}")
        payload = {}
        for item in inputs:
            key, sep, value = item.partition("=")
            if not sep:
                raise typer.BadParameter(f"expected key=value, got {item!r}")
            payload[key] = _coerce(key, value, version["openapi_schema"])
        pred = c.json("POST", "/v1/predictions", json={"version": vid, "input": payload})
        _follow(c, pred)
        pred = c.json("GET", f"/v1/predictions/{pred['id']}")
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    if pred["status"] == "failed":
        _fail(RuntimeError(f"prediction {pred['id']} failed: {pred.get('error')}"))
    if pred["status"] == "canceled":
        _fail(RuntimeError(f"prediction {pred['id']} was canceled"))
    output = pred.get("output")
    if output_dir is not None:
        output = _download(c, output, output_dir)
    print(output if isinstance(output, str) else json.dumps(output, indent=2))


def _follow(c, pred: dict) -> None:
    """Stream logs to stderr and show tqdm progress as a bar until the prediction is done."""
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total}"), console=err, transient=True) as bar:
        task = bar.add_task(pred["status"], total=None)
        headers = {"Accept": "text/event-stream"}
        with c.http.stream("GET", pred["urls"]["stream"], headers=headers, timeout=None) as resp:
            event = None
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "logs":
                    text = line[5:].removeprefix(" ")
                    p = TQDM.search(text)
                    if p:
                        bar.update(task, completed=int(p.group(2)), total=int(p.group(3)),
                                   description="processing")
                    elif text.strip():
                        err.print(text, markup=False, highlight=False)
                elif line.startswith("data:") and event == "done":
                    return


def _download(c, value: Any, dest: Path) -> Any:
    if isinstance(value, list):
        return [_download(c, v, dest) for v in value]
    if isinstance(value, dict):
        return {k: _download(c, v, dest) for k, v in value.items()}
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        dest.mkdir(parents=True, exist_ok=True)
        name = Path(httpx.URL(value).path).name or "output"
        resp = c.http.get(value, timeout=300)
        resp.raise_for_status()
        target = dest / name
        target.write_bytes(resp.content)
        return str(target)
    return value


@predictions_app.command("list")
def predictions_list(limit: int = typer.Option(20, help="how many to show")):
    """The newest predictions."""
    c = _client()
    table = Table("id", "model", "status", "source", "created")
    page = c.json("GET", "/v1/predictions")
    for p in page["results"][:limit]:
        table.add_row(p["id"], p["model"], p["status"], p.get("source") or "", p.get("created_at") or "")
    out.print(table)


@batches_app.command("list")
def batches_list():
    """Your batch jobs, newest first: status, counts, where results go."""
    try:
        page = _client().json("GET", "/v1/batches")
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    table = Table("id", "model", "status", "done", "failed", "skipped", "output", box=None, header_style="bold")
    for b in page["results"]:
        total = "?" if b.get("total") is None else b["total"]
        table.add_row(b["id"], b["model"], b["status"], f"{b['done']}/{total}", str(b["failed"]),
                      str(b["skipped"]), b["output"])
    out.print(table)


@batches_app.command("get")
def batches_get(batch_id: str):
    """One batch job as JSON."""
    try:
        out.print_json(data=_client().json("GET", f"/v1/batches/{batch_id}"))
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)


@predictions_app.command("get")
def predictions_get(pid: str):
    """One prediction as JSON."""
    try:
        out.print_json(data=_client().json("GET", f"/v1/predictions/{pid}"))
    except ApiError as e:
        _fail(e)


@predictions_app.command("cancel")
def predictions_cancel(pid: str):
    """Cancel a prediction."""
    try:
        p = _client().json("POST", f"/v1/predictions/{pid}/cancel")
    except ApiError as e:
        _fail(e)
    out.print(f"{p['id']}: {p['status']}")


def _admin(method: str, path: str, **kw) -> Any:
    """Call the admin API (`/v1/admin/…`) as the configured token's account (an admin)."""
    c = _client()
    try:
        resp = c.request(method, "/v1/admin" + path, **kw)
    except ApiError as e:
        if e.status == 404 and path in ("/accounts", "/tokens"):
            _fail(RuntimeError("the admin API answered 404: this token is not an admin's"))
        _fail(e)
    except httpx.HTTPError as e:
        _fail(e)
    return resp.json() if resp.content else None


def _roles(values: list[str]) -> list[str]:
    return sorted({r.strip() for v in values for r in v.split(",") if r.strip()})


def _account_row(a: dict) -> list[str]:
    extra = []
    if a.get("members") is not None:
        extra.append("members: " + (", ".join(a["members"]) or "none"))
    if a.get("orgs"):
        extra.append("member of: " + ", ".join(a["orgs"]))
    return [a["username"], a["type"], ", ".join(a.get("roles") or []) or "-",
            "disabled" if a.get("disabled") else "active", "; ".join(extra)]


@accounts_app.command("create")
def accounts_create(username: str, name: Optional[str] = typer.Option(None),
                    org: bool = typer.Option(False, "--org", help="an organization, not a user"),
                    role: list[str] = typer.Option([], help="grant a role: push (create models, push "
                                                            "versions) or admin"),
                    limit_usd: Optional[str] = typer.Option(None, "--limit-usd",
                                                            help="spend limit per billing period, USD")):
    """Create an account (a user, or with --org an organization) and print its first API token
    (alone, on the last line)."""
    body = _admin("POST", "/accounts", json={"username": username, "name": name, "roles": _roles(role),
                                             "type": "organization" if org else "user", "limit_usd": limit_usd})
    out.print(body["token"], soft_wrap=True)


@accounts_app.command("list")
def accounts_list():
    """Every account: type, roles, whether disabled, organizations and members."""
    table = Table("account", "type", "roles", "state", "organizations")
    for a in _admin("GET", "/accounts")["results"]:
        table.add_row(*_account_row(a))
    out.print(table)


@accounts_app.command("set")
def accounts_set(username: str,
                 role: list[str] = typer.Option(None, help="the account's roles, replacing what it has "
                                                           "(push, admin; --role '' for none)"),
                 limit_usd: Optional[str] = typer.Option(None, "--limit-usd",
                                                         help="spend limit per billing period, USD "
                                                              "('none' removes it)")):
    """Change an account: its roles, its spend limit."""
    body: dict[str, Any] = {}
    if role is not None:
        body["roles"] = _roles(role)
    if limit_usd is not None:
        body["limit_usd"] = None if limit_usd.lower() == "none" else limit_usd
    a = _admin("PATCH", f"/accounts/{username}", json=body)
    limit = "no limit" if a.get("limit_usd") is None else f"limit ${a['limit_usd']:.2f}"
    out.print(f"{a['username']}: {', '.join(a['roles']) or 'no roles'}; {limit}")


@accounts_app.command("disable")
def accounts_disable(username: str,
                     enable: bool = typer.Option(False, "--enable", help="let it work again instead")):
    """Disable an account: its tokens stop working at once; its models, predictions and files stay."""
    a = _admin("PATCH", f"/accounts/{username}", json={"disabled": not enable})
    out.print(f"{a['username']}: {'disabled' if a['disabled'] else 'active'}")


@accounts_app.command("grant")
def accounts_grant(username: str, role: str = typer.Argument(..., help="push or admin"),
                   revoke: bool = typer.Option(False, "--revoke", help="take the role away instead")):
    """Grant (or revoke) one role; prints the account's roles."""
    current = set(_admin("GET", f"/accounts/{username}")["roles"])
    roles = current - {role} if revoke else current | {role}
    a = _admin("PATCH", f"/accounts/{username}", json={"roles": sorted(roles)})
    out.print(f"{username}: {', '.join(a['roles']) or 'no roles'}")


@app.command()
def usage(account: Optional[str] = typer.Option(None, "--account", help="whose (admins: anyone's)"),
          since: Optional[str] = typer.Option(None, "--since", help="from this day (default: the "
                                                                    "billing period's start)"),
          by: str = typer.Option("model", "--by", help="model, hardware or day"),
          csv: bool = typer.Option(False, "--csv", help="CSV: account, <by>, seconds, cost_usd")):
    """Billed seconds and cost of predictions, by model, hardware or day."""
    params = {k: v for k, v in {"account": account, "since": since, "by": by}.items() if v}
    c = _client()
    try:
        body = c.json("GET", "/v1/usage", params=params)
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    if csv:
        import csv as csvlib

        w = csvlib.writer(sys.stdout, lineterminator="\n")
        w.writerow(["account", by, "seconds", "cost_usd"])
        for r in body["results"]:
            w.writerow([body["account"], r["key"], f"{r['seconds']:.3f}", _usd(r["cost_nanos"])])
        return
    table = Table(by, "seconds", "cost (USD)")
    for r in body["results"]:
        table.add_row(r["key"], f"{r['seconds']:.3f}", _usd(r["cost_nanos"]))
    out.print(table)
    limit = "" if body.get("limit_usd") is None else f" of a ${body['limit_usd']:.2f} limit"
    out.print(f"{body['account']}: {body['total']['seconds']:.3f} s, ${_usd(body['total']['cost_nanos'])}"
              f"{limit} since {body['since']} (period {body['period']})")


def _usd(nanos: int) -> str:
    return f"{usd(nanos):.9f}".rstrip("0").rstrip(".") if nanos else "0"


@orgs_app.command("add-member")
def orgs_add_member(org: str, user: str):
    """Make USER a member of ORG: it sees and acts on ORG's models and predictions with its own token."""
    body = _admin("PUT", f"/orgs/{org}/members/{user}")
    out.print(f"{org}: {', '.join(body['members'])}")


@orgs_app.command("remove-member")
def orgs_remove_member(org: str, user: str):
    """Remove USER from ORG (at once on every router replica)."""
    body = _admin("DELETE", f"/orgs/{org}/members/{user}")
    out.print(f"{org}: {', '.join(body['members']) or 'no members'}")


@tokens_app.command("create")
def tokens_create(account: str = typer.Option(..., "--account", help="whose token"),
                  name: Optional[str] = typer.Option(None, "--name", help="what it is for"),
                  expires: Optional[str] = typer.Option(None, "--expires",
                                                        help="when it stops working (ISO 8601)")):
    """Create an API token and print it (alone, on the last line): it is shown this once."""
    body = _admin("POST", "/tokens", json={"account": account, "name": name, "expires_at": expires})
    err.print(f"{body['id']} for {body['account']}" + (f" ({body['name']})" if body.get("name") else ""))
    out.print(body["token"], soft_wrap=True)


@tokens_app.command("list")
def tokens_list(account: Optional[str] = typer.Option(None, "--account", help="only this account's")):
    """API tokens: id, account, name, prefix, created, expires, last used (never the token)."""
    table = Table("id", "account", "name", "prefix", "created", "expires", "last used")
    for t in _admin("GET", "/tokens", params={"account": account} if account else None)["results"]:
        table.add_row(t["id"], t["account"], t.get("name") or "", t.get("prefix") or "",
                      t.get("created_at") or "", t.get("expires_at") or "", t.get("last_used_at") or "never")
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token: str = typer.Argument(..., help="the token's id (tok_…), or the token itself")):
    """Make one API token stop working, at once on every router replica."""
    tid = token if token.startswith("tok_") else token_id(token_digest(token))
    _admin("DELETE", f"/tokens/{tid}")
    out.print(f"revoked {tid}")


@tokens_app.command("rotate")
def tokens_rotate(username: str):
    """Revoke every token of an account and print its one new token."""
    out.print(_admin("POST", f"/accounts/{username}/tokens/rotate")["token"], soft_wrap=True)


@webhooks_app.command("secret")
def webhooks_secret(rotate: bool = typer.Option(False, "--rotate", help="replace it with a new one")):
    """Print your webhook signing secret (`whsec_…`), or with --rotate a new one."""
    c = _client()
    try:
        body = c.json("POST", "/v1/webhooks/default/secret/rotate") if rotate else \
            c.json("GET", "/v1/webhooks/default/secret")
    except (ApiError, httpx.HTTPError) as e:
        _fail(e)
    out.print(body["key"])


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
