"""Run inside Mailman by integration/lists/mailman3/run:

    mailman -C CFG shell -r mm_setup.setup OWNER LIST[:personalize] MEMBER... // LIST ...

creates each list with its owner (as `mailman create -N -o OWNER LIST`),
sets it up, adds its members (as `mailman addmembers --no-welcome-msg`),
and prints the settings the run relies on. One Mailman start for all of
it instead of one per command (each costs seconds). Standard library and
Mailman only."""

import io

from mailman.app.lifecycle import create_list
from mailman.commands.cli_addmembers import add_members
from mailman.config import config
from mailman.interfaces.action import Action
from mailman.interfaces.domain import IDomainManager
from mailman.interfaces.mailinglist import Personalization
from zope.component import getUtility


def setup(owner, *args):
    groups, cur = [], []
    for arg in args:
        if arg == "//":
            groups.append(cur)
            cur = []
        else:
            cur.append(arg)
    groups.append(cur)
    for spec, *members in groups:
        fqdn, _, flag = spec.partition(":")
        domains = getUtility(IDomainManager)
        host = fqdn.split("@", 1)[1]
        if domains.get(host) is None:
            domains.add(host)
        mlist = create_list(fqdn, owners=[owner])
        configure(mlist, personalize=(flag == "personalize"))
        config.db.commit()
        # `mailman addmembers --no-welcome-msg FILE LIST`: pre-verified,
        # pre-approved, regular delivery.
        add_members(mlist, io.StringIO("\n".join(members) + "\n"), None, False, False)
        config.db.commit()
        show(mlist)
        for member in mlist.members.members:
            print("mm-member: %s %s" % (mlist.list_id, member.address.email))


def configure(mlist, personalize=False):
    # Members post without moderation. Mailman's default for members is
    # `defer` (no member rule decides; the post is accepted unless another
    # rule holds it), the default for strangers `hold`. Spelled out here.
    mlist.default_member_action = Action.defer
    mlist.default_nonmember_action = Action.hold
    # No welcome mail to the test members; owners are not told about each
    # new member.
    mlist.send_welcome_message = False
    mlist.admin_notify_mchanges = False
    # Bounce processing as shipped: on, threshold 5, one score per day.
    mlist.process_bounces = True
    # A personalized list gets one copy per member; with [mta]
    # verp_personalized_deliveries each has its VERP sender
    # LIST-bounces+member=domain@.
    mlist.personalize = Personalization.individual if personalize else Personalization.none


def show(mlist):
    for name in (
        "posting_address",
        "bounces_address",
        "owner_address",
        "request_address",
        "personalize",
        "default_member_action",
        "default_nonmember_action",
        "process_bounces",
        "bounce_score_threshold",
        "bounce_info_stale_after",
        "bounce_notify_owner_on_bounce_increment",
        "bounce_notify_owner_on_disable",
        "forward_unrecognized_bounces_to",
        "dmarc_mitigate_action",
    ):
        print("mm-setting: %s %s=%s" % (mlist.list_id, name, getattr(mlist, name)))
    for name in ("verp_delivery_interval", "verp_personalized_deliveries", "verp_probes", "verp_regexp"):
        print("mm-setting: mta.%s=%s" % (name, getattr(config.mta, name)))
