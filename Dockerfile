# idp: an OpenID Connect identity provider. Build: docker build -t idp .
# Run the whole deployment (PostgreSQL, Redis, migrations, two nodes, nginx): see compose.yaml and
# docs/deployment.md.

# -- build stage: the only place compilers exist --------------------------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships manylinux wheels for CPython 3.11; the compiler is here for a platform
# where one does not (it never reaches the final image).
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY idp ./idp
COPY migrations ./migrations
# The exact versions the suite ran against (constraints.txt), into a venv copied whole below.
RUN python -m venv /opt/idp \
 && /opt/idp/bin/pip install --no-compile -c constraints.txt . \
 && /opt/idp/bin/python -m compileall -q /opt/idp/lib

# -- final stage ------------------------------------------------------------------------------------
FROM python:3.11-slim
# tzdata: the system zone database for anything that reads /usr/share/zoneinfo (idp's own zoneinfo
# checks use the tzdata package, installed with idp).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 idp \
 && useradd --system --uid 10001 --gid idp --home-dir /var/lib/idp --shell /usr/sbin/nologin idp \
 && install -d -o idp -g idp -m 0700 /var/lib/idp /var/lib/idp/pictures
COPY --from=build /opt/idp /opt/idp
ENV PATH=/opt/idp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    IDP_DATA_DIR=/var/lib/idp \
    IDP_SERVER__HOST=0.0.0.0 \
    IDP_SERVER__PORT=8000
WORKDIR /var/lib/idp
USER idp:idp
EXPOSE 8000
# Liveness only (/healthz says the process serves; /readyz is for the balancer): no curl in a
# slim image, Python asks instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('IDP_SERVER__PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
CMD ["idp", "serve"]
