// MariaDB Connector/J through dbward: server-side prepared statements, DBeaver-style metadata
// browsing and GUI probes. Prints "key=value" lines; the pytest side asserts them and the audit.
// Usage: java -cp mariadb-java-client.jar:. MariaDbProbe <port> <user> <password>
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;

public class MariaDbProbe {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0] + "/dbward_test?useServerPrepStmts=true"
            + "&useSSL=false&connectTimeout=10000";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            try (Statement st = c.createStatement()) {
                st.execute("SET character_set_results = NULL");
                try (ResultSet rs = st.executeQuery("SELECT @@query_cache_size, @@version_comment")) {
                    rs.next();
                    System.out.println("probe=" + (rs.getString(2) != null));
                }
                try (ResultSet rs = st.executeQuery("SHOW VARIABLES LIKE 'lower_case_table_names'")) {
                    System.out.println("show=" + rs.next());
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT name, balance FROM customers WHERE id = ? OR name = ? ORDER BY id")) {
                ps.setInt(1, 1);
                ps.setString(2, "Lee Jun");
                try (ResultSet rs = ps.executeQuery()) {
                    StringBuilder sb = new StringBuilder();
                    while (rs.next()) {
                        sb.append(rs.getString(1)).append('|').append(rs.getBigDecimal(2)).append(';');
                    }
                    System.out.println("prepared=" + sb);
                }
                ps.setInt(1, 3);
                ps.setString(2, "nobody");
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    System.out.println("prepared2=" + rs.getString(1));
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT LENGTH(?)")) {
                byte[] blob = new byte[100000];
                java.util.Arrays.fill(blob, (byte) 'b');
                ps.setBinaryStream(1, new java.io.ByteArrayInputStream(blob), blob.length);
                try (ResultSet rs = ps.executeQuery()) {
                    rs.next();
                    System.out.println("longdata=" + rs.getLong(1));
                }
            }
            try (PreparedStatement ps = c.prepareStatement("UPDATE customers SET phone = phone WHERE id = ?")) {
                ps.setInt(1, 2);
                System.out.println("update=" + ps.executeUpdate());
            }
            DatabaseMetaData md = c.getMetaData();
            System.out.println("product=" + md.getDatabaseProductName());
            StringBuilder cats = new StringBuilder();
            try (ResultSet rs = md.getCatalogs()) {
                while (rs.next()) cats.append(rs.getString("TABLE_CAT")).append(',');
            }
            System.out.println("catalogs=" + cats);
            StringBuilder tables = new StringBuilder();
            try (ResultSet rs = md.getTables("dbward_test", null, "%", new String[] {"TABLE"})) {
                while (rs.next()) tables.append(rs.getString("TABLE_NAME")).append(',');
            }
            System.out.println("tables=" + tables);
            StringBuilder cols = new StringBuilder();
            try (ResultSet rs = md.getColumns("dbward_test", null, "customers", "%")) {
                while (rs.next()) cols.append(rs.getString("COLUMN_NAME")).append(',');
            }
            System.out.println("columns=" + cols);
            try (ResultSet rs = md.getPrimaryKeys("dbward_test", null, "customers")) {
                rs.next();
                System.out.println("pk=" + rs.getString("COLUMN_NAME"));
            }
            try (ResultSet rs = md.getIndexInfo("dbward_test", null, "customers", false, false)) {
                System.out.println("indexes=" + rs.next());
            }
            try (Statement st = c.createStatement()) {
                try {
                    st.executeUpdate("DELETE FROM customers WHERE id = 1");
                    System.out.println("denied=none");
                } catch (SQLException e) {
                    System.out.println("denied=" + e.getErrorCode() + "/" + e.getSQLState() + "/" + e.getMessage());
                }
                try (ResultSet rs = st.executeQuery("SELECT COUNT(*) FROM customers")) {
                    rs.next();
                    System.out.println("after=" + rs.getInt(1));
                }
            }
        }
    }
}
