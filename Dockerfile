# career-relay: one image for `serve` (everything in one process), `gateway` (SMTP intake
# and delivery) and `site` (the consent site and its forwarding worker). See docs/deploy.md.
#
#   docker build -t career-relay .
#   docker run -v ./etc:/etc/career-relay:ro -v career-relay-data:/var/lib/career-relay \
#              -p 2525:2525 -p 8080:8080 career-relay            # serve
#   docker run ... career-relay gateway                          # or: site, check-config, ...

# Pinned by tag: a rebuild gets the same Python and Debian release. Bump it deliberately
# (and pin a digest, @sha256:..., once you can resolve and check one; docs/deploy.md).
FROM python:3.11-slim-bookworm AS build
# The wheel, built from the locked setuptools and wheel (hashes checked): it carries the
# packages, templates/emails/ and the site's templates and static files.
WORKDIR /src
COPY requirements-build.lock pyproject.toml README.md ./
COPY career_relay/ career_relay/
COPY gateway/ gateway/
COPY consent_site/ consent_site/
COPY templates/ templates/
RUN pip install --no-cache-dir --require-hashes -r requirements-build.lock \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation -w /dist .

FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A system user without a login shell; it owns only the data directory.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/career-relay \
        --no-create-home --shell /usr/sbin/nologin career-relay \
    && mkdir -p /etc/career-relay /var/lib/career-relay \
    && chown career-relay:career-relay /var/lib/career-relay \
    && chmod 0750 /var/lib/career-relay

# The runtime dependencies at the locked versions and hashes (no dev extras), then the
# wheel alone: nothing resolved at build time. Installed by root, read-only to the
# service user, which runs everything below.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && rm /tmp/requirements.lock
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && rm -r /tmp/dist \
    && career-relay --version

# The configuration file, DKIM keys and TLS files are mounted at /etc/career-relay
# (relative paths in the file are relative to it); the spool and the ledger live in the
# volume. The environment overrides the file (docs/configuration.md): inside a container
# the listeners must bind every interface, and the data paths point into the volume.
ENV CAREER_RELAY_CONFIG=/etc/career-relay/career-relay.toml \
    CAREER_RELAY_GATEWAY_LISTEN=0.0.0.0:2525 \
    CAREER_RELAY_SITE_LISTEN=0.0.0.0:8080 \
    CAREER_RELAY_SITE_METRICS_LISTEN=0.0.0.0:9464 \
    CAREER_RELAY_QUEUE_DIR=/var/lib/career-relay/spool \
    CAREER_RELAY_LEDGER_PATH=/var/lib/career-relay/ledger.db
VOLUME ["/var/lib/career-relay"]

USER career-relay:career-relay
# 9464: /metrics (publish it to the monitoring network only, never with the site)
EXPOSE 2525 8080 9464

# Liveness of the consent site (`serve` and `site`). slim has no curl: Python's urllib,
# which raises (exit 1) on a refused connection or a non-2xx answer. For `gateway` alone,
# override it with an SMTP check (docs/deploy.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('CAREER_RELAY_SITE_LISTEN', '0.0.0.0:8080').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]

# SIGTERM (docker stop) stops taking mail and finishes what is in flight (up to 30 s):
# give the container a longer grace period than Docker's 10 s (docker run --stop-timeout 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["career-relay"]
CMD ["serve"]
