"""``alize``: serve the platform and talk to it from a terminal."""

from __future__ import annotations

import typer

from alize.cli import bench as bench_cmd
from alize.cli import chat as chat_cmd
from alize.cli import evaluation as eval_cmd
from alize.cli import finetune as finetune_cmd
from alize.cli import jobs as jobs_cmd
from alize.cli import models as models_cmd
from alize.cli import ray as ray_cmd
from alize.cli import safety as safety_cmd
from alize.cli import serve as serve_cmd
from alize.cli import tenancy as tenancy_cmd
from alize.cli import tune as tune_cmd
from alize.cli import users as users_cmd
from alize.cli import worker as worker_cmd

app = typer.Typer(help="Alizé: models as a service on your own hardware.", no_args_is_help=True)
app.command("serve")(serve_cmd.serve)
app.command("chat")(chat_cmd.chat)
models_cmd.models_app.command("tune")(tune_cmd.tune)
app.add_typer(models_cmd.models_app, name="models")
app.command("deploy")(models_cmd.deploy)
app.command("undeploy")(models_cmd.undeploy)
app.add_typer(safety_cmd.safety_app, name="safety")
app.add_typer(ray_cmd.ray_app, name="ray")
app.add_typer(tenancy_cmd.projects_app, name="projects")
app.add_typer(tenancy_cmd.keys_app, name="keys")
app.add_typer(tenancy_cmd.audit_app, name="audit")
app.command("usage")(tenancy_cmd.usage)
app.add_typer(users_cmd.users_app, name="users")
app.add_typer(finetune_cmd.finetune_app, name="finetune")
app.command("worker")(worker_cmd.worker)
app.add_typer(jobs_cmd.files_app, name="files")
app.add_typer(jobs_cmd.batch_app, name="batch")
app.command("bench")(bench_cmd.bench)
app.command("eval")(eval_cmd.evaluate)

if __name__ == "__main__":
    app()
