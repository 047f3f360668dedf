// MariaDB Connector/J through dbward with masking rules and a row limit: text queries and
// server-side prepared statements (binary protocol). Prints "key=value" lines; the pytest side
// (tests/e2e/mysql/test_masking.py) asserts them.
// Usage: java -cp mariadb-java-client.jar:. MariaDbMaskProbe <port> <user> <password>
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLWarning;
import java.sql.Statement;

public class MariaDbMaskProbe {
    static String rows(ResultSet rs) throws Exception {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder sb = new StringBuilder();
        while (rs.next()) {
            for (int i = 1; i <= md.getColumnCount(); i++) {
                sb.append(rs.getString(i)).append(i < md.getColumnCount() ? "|" : ";");
            }
        }
        return sb.toString();
    }

    static String types(ResultSet rs) throws Exception {
        ResultSetMetaData md = rs.getMetaData();
        StringBuilder sb = new StringBuilder();
        for (int i = 1; i <= md.getColumnCount(); i++) {
            sb.append(md.getColumnLabel(i)).append(':').append(md.getColumnTypeName(i)).append(',');
        }
        return sb.toString();
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:mariadb://127.0.0.1:" + args[0] + "/shop?useServerPrepStmts=true"
            + "&useSSL=false&connectTimeout=10000";
        try (Connection c = DriverManager.getConnection(url, args[1], args[2])) {
            String sql = "SELECT id, balance, born, card, note FROM accounts WHERE id > ? ORDER BY id";
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery(sql.replace("?", "0"))) {
                System.out.println("text_types=" + types(rs));
                System.out.println("text=" + rows(rs));
            }
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                ps.setInt(1, 0);
                try (ResultSet rs = ps.executeQuery()) {
                    System.out.println("binary_types=" + types(rs));
                    System.out.println("binary=" + rows(rs));
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT g, phone FROM big WHERE g > ? ORDER BY g")) {
                ps.setInt(1, 10);
                try (ResultSet rs = ps.executeQuery()) {
                    System.out.println("cut=" + rows(rs));
                }
                SQLWarning w = ps.getWarnings();
                System.out.println("warning=" + (w == null ? "none" : w.getErrorCode() + "/" + w.getMessage()));
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("SELECT count(*) FROM big")) {
                System.out.println("after=" + rows(rs));
            }
        }
    }
}
