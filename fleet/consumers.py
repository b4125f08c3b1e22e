"""The live websocket (``/ws/live/``): vehicle states pushed as the ingest stores fixes.

The ingest pipeline sends one ``vehicles.update`` message per organisation per stored
batch (never one per fix, which a Redis channel layer could not keep up with); each
client receives only the vehicles its user may see.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from fleet.live import organisation_group, vehicle_snapshot
from fleet.selectors import organisations_visible_to, vehicles_visible_to


class LiveConsumer(AsyncJsonWebsocketConsumer):
    groups: list[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        organisation_ids, self.visible_vehicle_ids, initial = await self._visible(user)
        self.groups = [organisation_group(pk) for pk in organisation_ids]
        for group in self.groups:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        await self.send_json({"type": "snapshot", "vehicles": initial})

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def vehicles_update(self, event: dict) -> None:
        visible = [v for v in event["vehicles"] if v["id"] in self.visible_vehicle_ids]
        if visible:
            await self.send_json({"type": "update", "vehicles": visible})

    @database_sync_to_async
    def _visible(self, user) -> tuple[list[int], set[int], list[dict]]:
        organisation_ids = list(organisations_visible_to(user).values_list("pk", flat=True))
        vehicles = list(vehicles_visible_to(user).select_related("state"))
        return (
            organisation_ids,
            {vehicle.pk for vehicle in vehicles},
            [vehicle_snapshot(vehicle) for vehicle in vehicles],
        )
