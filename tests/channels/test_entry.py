"""Entry points and the OA authorisation: deep links on every channel select the district's
link and record the cadre's referral; the Zalo OAuth start/callback store the OA's first token
pair (PKCE + state); Zalo's domain verification file and meta tag are served."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from bots.records.models import ChannelIdentity, Participant, ReferralCredit
from bots.webhooks import STATE_COOKIE
from flows.vocab import Channel

from .conftest import BENTRE_OA, CODE_VERIFIER, TANPHU_OA, ZALO_APP_ID, Server
from .people import MessengerUser, TelegramUser, ZaloUser

GUIDE = "Mình sẽ hướng dẫn bạn kích hoạt tài khoản định danh điện tử VNeID."


async def _credits(server: Server) -> list[tuple[str, str, Channel, str]]:
    async with server.runtime._db.reads() as session:  # type: ignore[union-attr]
        rows = await session.execute(
            select(ReferralCredit, ChannelIdentity)
            .join(Participant, Participant.id == ReferralCredit.participant_id)
            .join(ChannelIdentity, ChannelIdentity.participant_id == Participant.id)
            .order_by(ReferralCredit.id)
        )
        return [(c.code, c.flow, i.channel, i.entry_ref or "") for c, i in rows.all()]


async def test_deep_links_record_the_cadres_referral_on_every_channel(server: Server) -> None:
    first = await MessengerUser(server, "9400000000000001").start("vneid-can-bo-an")
    assert GUIDE in first  # m.me/<page>?ref=vneid-can-bo-an, first contact (Get Started)
    returning = MessengerUser(server, "9400000000000002")
    await returning.say("xin chào")
    ms_body = returning.body(
        referral={"ref": "vneid-can-bo-an", "source": "SHORTLINK", "type": "OPEN_THREAD"}
    )
    assert GUIDE in await returning.turn(ms_body)  # existing thread: a referral event
    assert GUIDE in await TelegramUser(server, 9400001).start("vneid-can-bo-an")
    assert GUIDE in await ZaloUser(server, "9400000000000000001").say("#vneid-can-bo-an")

    credits = await _credits(server)
    assert [(code, flow) for code, flow, _, _ in credits] == [("can-bo-an", "huong_dan")] * 4
    assert sorted(c.value for _, _, c, _ in credits) == [
        "messenger", "messenger", "telegram", "zalo",
    ]
    # people who came in by the link have it on record as their entry
    entries = [ref for _, _, channel, ref in credits if channel is not Channel.MESSENGER]
    assert entries == ["vneid-can-bo-an", "vneid-can-bo-an"]
    assert credits[0][3] == "vneid-can-bo-an"  # the Messenger newcomer


async def test_zalo_authorisation_stores_the_first_token_pair(server: Server) -> None:
    client, zalo = server.client, server.platforms.zalo
    start = await client.get("/oauth/zalo/start", allow_redirects=False)
    assert start.status == 302
    target = urlsplit(start.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == f"{zalo.oauth_url}/permission"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    challenge = base64.urlsafe_b64encode(hashlib.sha256(CODE_VERIFIER.encode()).digest())
    assert query["code_challenge"] == challenge.rstrip(b"=").decode()
    assert query["app_id"] == ZALO_APP_ID
    assert query["redirect_uri"] == "https://loa.example.vn/oauth/zalo/callback"
    cookie = start.cookies[STATE_COOKIE]
    assert cookie["httponly"] and cookie["secure"]  # LOA_PUBLIC_URL is https
    state, nonce = query["state"], cookie.value

    keeper = server.channels.zalo_keeper
    before = await keeper.status(TANPHU_OA)
    code = zalo.issue_code(TANPHU_OA, CODE_VERIFIER)  # what Zalo redirects back with
    params = {"code": code, "oa_id": TANPHU_OA, "state": state}
    headers = {"Cookie": f"{STATE_COOKIE}={nonce}"}

    refused = [
        ({**params, "state": state + "x"}, headers),  # tampered state
        (params, {}),  # another browser (no cookie)
        ({**params, "oa_id": "9999999999999999999"}, headers),  # an OA no district has
    ]
    for bad, bad_headers in refused:
        response = await client.get("/oauth/zalo/callback", params=bad, headers=bad_headers)
        assert response.status == 400
    assert (await keeper.status(TANPHU_OA)).generation == before.generation

    done = await client.get("/oauth/zalo/callback", params=params, headers=headers)
    assert done.status == 200
    assert "Đã cấp quyền cho Loa" in await done.text()
    after = await keeper.status(TANPHU_OA)
    assert after.generation == before.generation + 1 and not after.needs_reauthorisation
    again = await client.get("/oauth/zalo/callback", params=params, headers=headers)
    assert again.status == 400  # a code is single use
    assert "hết hạn" in await again.text()
    # the new pair is what the OA sends with now
    person = ZaloUser(server, "9400000000000000002")
    await person.say("xin chào")
    token = server.platforms.zalo.sends[-1].headers["access_token"]
    assert await keeper.access_token(TANPHU_OA) == token
    assert zalo.access[token] == TANPHU_OA
    assert (await keeper.status(BENTRE_OA)) is not None


async def test_zalo_domain_verification(server: Server) -> None:
    page = await server.client.get("/zalo_verifierFakeVerifyCode0001.html")
    assert page.status == 200
    assert 'content="FakeVerifyCode0001"' in await page.text()
    assert (await server.client.get("/zalo_verifierSomeoneElse001.html")).status == 404
    home = await (await server.client.get("/")).text()
    assert '<meta name="zalo-platform-site-verification" content="FakeVerifyCode0001" />' in home
