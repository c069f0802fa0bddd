// The course's read simulations for people who have Gatling (3.x); `loader run` runs
// the same scenarios natively (gatling/scenarios/*.toml). USERS comes from the
// environment as in the course scripts; CLUSTER_IP is the platform's ingress.
package scalelab

import scala.concurrent.duration._
import io.gatling.core.Predef._
import io.gatling.http.Predef._

object Utility {
  def envVar(name: String, default: String): String = sys.env.getOrElse(name, default)
  def envVarToInt(name: String, default: Int): Int = sys.env.get(name).map(_.toInt).getOrElse(default)
}

object RUser {
  val feeder = csv("users.csv").eager.circular
  val ruser = forever("i") {
    feed(feeder)
      .exec(http("RUser ${i}").get("/api/v1/user/${UUID}").header("Authorization", "Bearer A"))
      .pause(1)
  }
}

object RMusic {
  val feeder = csv("music.csv").eager.circular
  val rmusic = forever("i") {
    feed(feeder)
      .exec(http("RMusic ${i}").get("/api/v1/music/${UUID}").header("Authorization", "Bearer A"))
      .pause(1)
  }
}

object RPlaylist {
  val feeder = csv("playlist.csv").eager.circular
  val rplaylist = forever("i") {
    feed(feeder)
      .exec(http("RPlaylist ${i}").get("/api/v1/playlist/${UUID}").header("Authorization", "Bearer A"))
      .pause(1)
  }
}

object RBoth {
  val u_feeder = csv("users.csv").eager.random
  val m_feeder = csv("music.csv").eager.random
  val rboth = forever("i") {
    feed(u_feeder)
      .exec(http("RUserVarying ${i}").get("/api/v1/user/${UUID}").header("Authorization", "Bearer A"))
      .pause(1, 60)
      .feed(m_feeder)
      .exec(http("RMusicVarying ${i}").get("/api/v1/music/${UUID}").header("Authorization", "Bearer A"))
      .pause(1, 60)
  }
}

abstract class ReadTablesSim extends Simulation {
  val httpProtocol = http
    .baseUrl("http://" + Utility.envVar("CLUSTER_IP", "127.0.0.1:30080"))
    .acceptHeader("application/json,text/html")
    .userAgentHeader("Mozilla/5.0 (scalelab gatling)")
}

class ReadUserSim extends ReadTablesSim {
  val scnReadUser = scenario("ReadUser").exec(RUser.ruser)
  setUp(scnReadUser.inject(atOnceUsers(Utility.envVarToInt("USERS", 1)))).protocols(httpProtocol)
}

class ReadMusicSim extends ReadTablesSim {
  val scnReadMusic = scenario("ReadMusic").exec(RMusic.rmusic)
  setUp(scnReadMusic.inject(atOnceUsers(Utility.envVarToInt("USERS", 1)))).protocols(httpProtocol)
}

class ReadPlaylistSim extends ReadTablesSim {
  val scnReadPlaylist = scenario("ReadPlaylist").exec(RPlaylist.rplaylist)
  setUp(scnReadPlaylist.inject(atOnceUsers(Utility.envVarToInt("USERS", 1)))).protocols(httpProtocol)
}

class ReadBothVaryingSim extends ReadTablesSim {
  val users = Utility.envVarToInt("USERS", 10)
  val scnReadBoth = scenario("ReadBothVarying").exec(RBoth.rboth)
  setUp(scnReadBoth.inject(rampConcurrentUsers(1).to(users).during(10 * users))).protocols(httpProtocol)
}
