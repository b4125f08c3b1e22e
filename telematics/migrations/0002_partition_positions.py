"""On PostgreSQL, recreate the (still empty) position table partitioned by fix time.

Django's model state is unchanged; only the physical table differs: the primary key
becomes (id, fix_time) because a partitioned table's unique keys must include the
partition key. Other databases keep the plain table.
"""

from django.db import migrations

CREATE_PARTITIONED = """
DROP TABLE telematics_position;
CREATE TABLE telematics_position (
    id bigserial NOT NULL,
    device_id bigint NOT NULL
        REFERENCES telematics_device (id) DEFERRABLE INITIALLY DEFERRED,
    vehicle_id bigint NULL
        REFERENCES fleet_vehicle (id) DEFERRABLE INITIALLY DEFERRED,
    fix_time timestamp with time zone NOT NULL,
    server_time timestamp with time zone NOT NULL,
    latitude double precision NOT NULL,
    longitude double precision NOT NULL,
    altitude double precision NULL,
    speed_kmh double precision NULL,
    course double precision NULL,
    satellites smallint NULL,
    hdop double precision NULL,
    valid boolean NOT NULL,
    ignition boolean NULL,
    odometer_km double precision NULL,
    attributes jsonb NOT NULL,
    PRIMARY KEY (id, fix_time),
    CONSTRAINT position_unique_fix UNIQUE (device_id, fix_time)
) PARTITION BY RANGE (fix_time);
CREATE INDEX position_vehicle_time ON telematics_position (vehicle_id, fix_time);
CREATE TABLE telematics_position_default PARTITION OF telematics_position DEFAULT;
"""


def partition(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(CREATE_PARTITIONED)
    from telematics.partitions import ensure_position_partitions

    ensure_position_partitions(using=schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("telematics", "0001_initial"), ("fleet", "0001_initial")]

    operations = [migrations.RunPython(partition, migrations.RunPython.noop)]
