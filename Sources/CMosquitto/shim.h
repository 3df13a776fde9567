#pragma once
// libmosquitto, the Eclipse Mosquitto project's MQTT client library (Debian: libmosquitto-dev), and its MQTT v5
// protocol constants (property identifiers, protocol versions).
#include <mosquitto.h>
#include <mqtt_protocol.h>
