"""What ``serve`` prints once it listens: where each part is and, in the demo, what to try.

Every command it shows is one the user can type here as printed
(``career_relay.invocation``): ``make run`` leaves ``career-relay`` in
``.venv/bin``, not on PATH.
"""

from __future__ import annotations

from career_relay.invocation import command, python
from career_relay.settings import Settings
from career_relay.validate import parse_hostport


def banner(settings: Settings, *, smtp: bool, site: bool, workers: int) -> str:
    config = settings.source if settings.source is not None else "career-relay.toml"
    lines = ["career-relay is running (Ctrl-C to stop)."]
    if smtp:
        lines.append(f"  SMTP relay:   {settings.gateway.listen} ({workers} worker(s))")
    if site:
        lines.append(f"  consent site: {settings.site.public_url}  (health: /healthz)")
        lines.append(f"  admin pages:  {settings.site.public_url.rstrip('/')}/admin/  (logins: "
                     f"printed by init; a lost password: "
                     f"`{command('admin', 'reset-password', '--email', 'E', '--config', config)}`)")
        if settings.site.metrics_listen:
            lines.append(f"  metrics:      http://{settings.site.metrics_listen}/metrics")
    if site and settings.demo.agency_dir:
        lines.append(f"  demo agency:  {settings.agency.webhook_url} writes every forward it "
                     f"receives to {settings.demo.agency_dir}/<forward_id>.json")
    if settings.demo.capture_dir and smtp:
        host, port = parse_hostport("gateway.listen", settings.gateway.listen)
        lines += [
            f"  demo upstream: {settings.upstream.host}:{settings.upstream.port} writes every "
            f"relayed message to {settings.demo.capture_dir}/",
            "",
            "Send a test message (in a second terminal):",
            f"  {command('send-test', '--config', config)}",
            "or with Python alone:",
            f"  {python()} -c \"import smtplib; smtplib.SMTP('{host}', {port}).sendmail("
            "'hr@acme.example', ['candidate@example.net'], b'From: hr@acme.example\\r\\n"
            "To: candidate@example.net\\r\\nSubject: hello\\r\\n\\r\\n"
            "Hello from career-relay\\r\\n')\"",
            "",
            "Send a rejection (each candidate's copy gets a personal link and a DKIM signature):",
            f"  {command('send-test', '--rejection', '--config', config)}",
            "then print the links of the newest message in "
            f"{settings.demo.capture_dir}/, decoded, and open the /c/ one in a browser:",
            f"  {command('outbox', 'last', '--config', config)}",
        ]
    return "\n".join(lines)
