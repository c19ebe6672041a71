//! XEP-0163 Personal Eventing Protocol: every account is a pubsub service.
