"""`forage sandbox ...` commands: build the image, start dockerd, try code, list and reap sandboxes."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, help="Code sandboxes: build the image, run code, list and reap containers.")


@app.command("build")
def build(
    docker: bool = typer.Option(True, help="Also start dockerd if needed and `docker import` the root as an image."),
    force: bool = typer.Option(False, help="Rebuild the root even if the cached one exists."),
    mirror: str = typer.Option("", help="Debian mirror for debootstrap (default: the one apt uses)."),
) -> None:
    """Build the default sandbox root with debootstrap (cached by recipe) and import it into docker."""
    import dataclasses
    import time

    from ..sandboxes.code.daemon import DockerUnavailable, ensure_dockerd
    from ..sandboxes.code.image import ImageBuildError, build_rootfs, default_recipe, ensure_docker_image

    recipe = default_recipe()
    if mirror:
        recipe = dataclasses.replace(recipe, mirror=mirror)
    started = time.monotonic()
    try:
        root = build_rootfs(recipe, force=force, log=typer.echo)
        typer.echo(f"root: {root}")
        if docker:
            ensure_dockerd()
            if force:
                import subprocess

                subprocess.run(["docker", "rmi", "-f", f"forage-sandbox:{recipe.key()}"], capture_output=True)
            typer.echo(f"image: {ensure_docker_image(recipe, log=typer.echo)}")
            from ..sandboxes.code.daemon import ensure_runsc_runtime

            try:
                typer.echo(f"gVisor: {ensure_runsc_runtime()}")
            except Exception as e:  # optional: the runc sandboxes work without it
                typer.echo(f"gVisor: not registered ({type(e).__name__}: {e})")
    except (ImageBuildError, DockerUnavailable) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo(f"done in {time.monotonic() - started:.1f} s")


@app.command("dockerd")
def dockerd() -> None:
    """Start dockerd in the background if no daemon answers (log under $FORAGE_CACHE/sandbox)."""
    from ..sandboxes.code.daemon import DockerUnavailable, ensure_dockerd

    try:
        ensure_dockerd()
    except DockerUnavailable as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1)
    typer.echo("dockerd is running")


@app.command("run")
def run(
    code: str = typer.Argument(..., help="Python code, or '-' to read it from stdin."),
    backend: str = typer.Option("bwrap", "--backend", "-b", help="docker, bwrap or local (unsafe)."),
    timeout: float = typer.Option(10.0, help="Seconds before the call is killed."),
    runtime: str = typer.Option("", help="docker OCI runtime, e.g. runsc (gVisor); default: the daemon's."),
) -> None:
    """Run code once in a fresh sandbox and print what it printed."""
    import asyncio
    import sys

    from ..sandboxes.code import SandboxError, make_sandbox

    src = sys.stdin.read() if code == "-" else code

    async def go():
        kwargs = {"unsafe": True} if backend == "local" else {}
        if runtime:
            kwargs["docker_runtime"] = runtime
        async with make_sandbox(backend, timeout=timeout, **kwargs) as sb:
            return await sb.run(src)

    try:
        res = asyncio.run(go())
    except (SandboxError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    typer.echo(res.to_text(empty=""), nl=True)
    raise typer.Exit(0 if res.ok else 1)


@app.command("seccomp")
def seccomp_cmd(
    docker: bool = typer.Option(False, "--docker", help="Print the docker seccomp profile (JSON)."),
    bpf: str = typer.Option("", help="Write the compiled bwrap BPF program to this file."),
) -> None:
    """Show the syscall filter both backends apply (the deny list, the docker profile, or the BPF program)."""
    from ..sandboxes.code import seccomp

    if docker:
        typer.echo(seccomp.docker_profile())
        return
    if bpf:
        data = seccomp.bwrap_filter()
        with open(bpf, "wb") as f:
            f.write(data)
        typer.echo(f"wrote {len(data) // 8} BPF instructions to {bpf}")
        return
    for why, names in seccomp.DENIED.items():
        typer.echo(f"EPERM   {why}: {', '.join(names)}")
    typer.echo(f"ENOSYS  {', '.join(seccomp.ENOSYS_SYSCALLS)} (libc falls back to clone)")
    for r in seccomp.ARG_RULES:
        typer.echo(f"EPERM   {r.syscall}(arg{r.index} & {r.mask:#x} == {r.value:#x}): {r.why}")


@app.command("ls")
def ls() -> None:
    """List Forage sandbox containers and bwrap cgroups on this machine."""
    from ..sandboxes.code.cgroups import list_cgroups
    from ..sandboxes.code.daemon import docker_ping

    if docker_ping():
        from ..sandboxes.code.docker import LABEL, docker_client, labelled_containers

        rows = labelled_containers(docker_client(), [LABEL])
        typer.echo(f"{len(rows)} docker sandbox container(s)")
        for c in rows:
            labels = c.get("Labels") or {}
            typer.echo(f"  {c['Id'][:12]}  {c.get('State', '?'):<8} owner={labels.get('forage.owner', '?')}  "
                       f"id={labels.get('forage.sandbox.id', '?')}  {c.get('Image', '')}")
    else:
        typer.echo("no docker daemon answers")
    groups = list_cgroups()
    typer.echo(f"{len(groups)} bwrap sandbox cgroup(s)")
    for g in groups:
        typer.echo(f"  {g}")


@app.command("reap")
def reap(all_: bool = typer.Option(False, "--all", help="Also remove sandboxes whose owner is still running.")) -> None:
    """Remove sandbox containers and cgroups left by Forage processes that died."""
    from ..sandboxes.code.cgroups import reap_stale_cgroups
    from ..sandboxes.code.daemon import docker_ping

    n = 0
    if docker_ping():
        from ..sandboxes.code.docker import reap_containers

        n = reap_containers(only_dead_owners=not all_)
    typer.echo(f"removed {n} container(s) and {reap_stale_cgroups(include_live=all_)} cgroup(s)")
