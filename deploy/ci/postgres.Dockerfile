# CI only: PostgreSQL from Debian's packages on the locally built base image, because
# no image registry can be reached there. Users run the official postgres image.
# PG_MAJOR must be the major the base image's suite ships (17 on trixie, 18 on forky).
ARG BASE_IMAGE=local/debian:trixie
FROM ${BASE_IMAGE}
ARG PG_MAJOR=17
ENV PG_MAJOR=${PG_MAJOR}
# No "main" cluster from the package's postinst: the entrypoint makes its own, in the volume.
RUN mkdir -p /etc/postgresql-common/createcluster.d \
 && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/ci.conf \
 && apt-get update && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
 && rm -rf /var/lib/apt/lists/*
# As in the official image: PGDATA names the data directory (the runbooks in docs/ use
# "$PGDATA" in `dc exec db ...`); PGHOST points psql at the socket the entrypoint makes in /tmp.
ENV PGDATA=/var/lib/postgresql/data PGHOST=/tmp
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
